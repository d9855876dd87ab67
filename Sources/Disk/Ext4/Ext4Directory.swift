/// One entry of a directory.
public struct Ext4DirectoryEntry: Sendable, Equatable {
    public var name: [UInt8]
    public var inode: UInt32
    /// ext4_dir_entry_2.file_type: 1 regular, 2 directory, 3 char, 4 block, 5 FIFO, 6 socket, 7 symlink.
    public var fileType: UInt8
}

/// Linear ext4 directory blocks (ext4_dir_entry_2, with the filetype feature).
enum Ext4DirectoryBlocks {
    static func recordLength(nameLength: Int) -> Int { (8 + nameLength + 3) & ~3 }

    /// The blocks holding "." (`selfInode`), ".." (`parentInode`) and `entries`, in order;
    /// each block's last record runs to its end.
    static func encode(selfInode: UInt32, parentInode: UInt32, entries: [Ext4DirectoryEntry], blockSize: Int) -> [[UInt8]] {
        var blocks: [[UInt8]] = []
        var block = [UInt8](repeating: 0, count: blockSize)
        var offset = 0
        var lastStart = -1
        func put(_ name: [UInt8], _ inode: UInt32, _ type: UInt8) {
            let length = recordLength(nameLength: name.count)
            if offset + length > blockSize {
                block.put16(UInt16(blockSize - lastStart), lastStart + 4)
                blocks.append(block)
                block = [UInt8](repeating: 0, count: blockSize)
                offset = 0
            }
            block.put32(inode, offset)
            block.put16(UInt16(length), offset + 4)
            block[offset + 6] = UInt8(name.count)
            block[offset + 7] = type
            block.replaceSubrange(offset + 8..<offset + 8 + name.count, with: name)
            lastStart = offset
            offset += length
        }
        put([UInt8(ascii: ".")], selfInode, Ext4.FileType.directory)
        put([UInt8(ascii: "."), UInt8(ascii: ".")], parentInode, Ext4.FileType.directory)
        for entry in entries { put(entry.name, entry.inode, entry.fileType) }
        block.put16(UInt16(blockSize - lastStart), lastStart + 4)
        blocks.append(block)
        return blocks
    }

    /// The live entries of one directory block, "." and ".." included; every record's
    /// length and name are checked against the block, so a hostile block cannot make the
    /// walk leave it or loop. `fileType` tells whether the entries carry a type byte.
    static func decode(_ block: ArraySlice<UInt8>, fileType: Bool, disk: String, directory: UInt32) throws(Ext4Error) -> [Ext4DirectoryEntry] {
        var entries: [Ext4DirectoryEntry] = []
        var offset = 0
        let size = block.count
        while offset < size {
            guard offset + 8 <= size else {
                throw .corrupt(disk: disk, structure: "directory inode \(directory)", problem: "a record header at byte \(offset) runs past the block")
            }
            let inode = block.le32(offset)
            let length = Int(block.le16(offset + 4))
            let nameLength = fileType ? Int(block[block.startIndex + offset + 6]) : Int(block.le16(offset + 6))
            guard length >= 8, length % 4 == 0, offset + length <= size, 8 + nameLength <= length else {
                throw .corrupt(disk: disk, structure: "directory inode \(directory)", problem: "record at byte \(offset) has length \(length) (name \(nameLength) bytes) in a \(size)-byte block")
            }
            if inode != 0, nameLength > 0 {
                let start = block.startIndex + offset + 8
                let name = Array(block[start..<start + nameLength])
                guard !name.contains(0), !name.contains(UInt8(ascii: "/")) else {
                    throw .corrupt(disk: disk, structure: "directory inode \(directory)", problem: "a name at byte \(offset) holds '/' or NUL")
                }
                entries.append(Ext4DirectoryEntry(name: name, inode: inode, fileType: fileType ? block[block.startIndex + offset + 7] : 0))
            }
            offset += length
        }
        return entries
    }
}
