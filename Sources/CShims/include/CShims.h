/* Umbrella for the one C target. Each header covers one kernel interface or C library. */
#ifndef CSHIMS_H
#define CSHIMS_H
#include "cshims_sys.h"
#include "cshims_kvm.h"
#include "cshims_uring.h"
#include "cshims_numa.h"
#include "cshims_fs.h"
#include "cshims_zlib.h"
#include "cshims_gunzip.h"
#include "cshims_zstd.h"
#include "cshims_sha256.h"
#include "cshims_spawn.h"
#include "cshims_privileges.h"
#include "cshims_events.h"
#include "cshims_seccomp.h"
#endif
