import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension Ext4Volume {
    /// Copies a regular file's contents into the host file `fd` (made the file's size first,
    /// so holes stay holes): only the extents' blocks are read, up to 4 MiB a read (which the
    /// disk submits as one batch of its grains' requests).
    public func copy(_ inode: Ext4Inode, to fd: Int32) async throws(Ext4Error) {
        let record = inode.record
        guard record.isRegular else { throw .invalidChange(path: "inode \(inode.number)", problem: "is not a regular file") }
        guard ftruncate(fd, off_t(record.size)) == 0 else {
            throw .invalidChange(path: "inode \(inode.number)", problem: "cannot size its host copy to \(record.size) bytes: \(String(cString: strerror(errno)))")
        }
        let blockSize = UInt64(geometry.blockSize)
        // A small file gets a buffer of its own size, not 4 MiB.
        let chunkBlocks = Int(min(UInt64((4 << 20) / geometry.blockSize), max(1, (record.size + blockSize - 1) / blockSize)))
        let buffer = disk.engine.makeBuffer(count: chunkBlocks * geometry.blockSize)
        for extent in record.extents {
            var done: UInt64 = 0
            while done < UInt64(extent.length) {
                let fileOffset = (UInt64(extent.logical) + done) * blockSize
                guard fileOffset < record.size else { return }
                let blocks = Int(min(UInt64(chunkBlocks), UInt64(extent.length) - done))
                // unsafe: `blocks` is at most chunkBlocks, the buffer's size in blocks.
                try await readBlocks(extent.physical + done, count: blocks, into: UnsafeMutableRawBufferPointer(start: buffer.base, count: blocks * geometry.blockSize),
                                     structure: "data of inode \(inode.number)")
                let bytes = Int(min(UInt64(blocks) * blockSize, record.size - fileOffset))
                var written = 0
                while written < bytes {
                    // unsafe: [written, bytes) lies within the blocks just read into the buffer.
                    let count = pwrite(fd, buffer.base + written, bytes - written, off_t(fileOffset) + off_t(written))
                    guard count > 0 else {
                        throw .invalidChange(path: "inode \(inode.number)", problem: "writing its host copy: \(String(cString: strerror(errno)))")
                    }
                    written += count
                }
                done += UInt64(blocks)
            }
        }
    }
}
