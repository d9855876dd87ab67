/* Why: Glibc's Swift module does not export <sys/xattr.h>; the ext4 writer copies a host
 * tree's extended attributes with llistxattr(2) and lgetxattr(2). */
#ifndef CSHIMS_XATTR_H
#define CSHIMS_XATTR_H
#include <sys/types.h>
#include <sys/xattr.h>
#endif
