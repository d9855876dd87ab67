import IOEngine

/// What `check` found in a disk chain: corruptions, which make data unreliable, and problems
/// that `repair` can fix without losing anything (space no table refers to, a redundant
/// grain table that disagrees with the primary one).
public struct CheckReport: Sendable {
    public var errors: [String] = []
    public var repairable: [String] = []
    public var allocatedGrains = 0
    public var leakedBytes: UInt64 = 0

    public var isClean: Bool { errors.isEmpty && repairable.isEmpty }
}

/// Consistency checks of a disk and its parents, and the repairs that are safe to make.
public enum DiskCheck {
    /// Checks the disk at `path` and its chain. Errors that stop the disk from opening at all
    /// are reported, not thrown.
    public static func check(path: String, engine: IOEngine) async -> CheckReport {
        var report = CheckReport()
        do throws(DiskError) {
            let disk = try await VirtualDisk.open(path: path, direct: false, engine: engine)
            for layer in disk.layers {
                for extent in layer.extents {
                    if case .sparse(let sparse) = extent.backing {
                        try await sparse.check(into: &report)
                    }
                }
            }
        } catch {
            report.errors.append(error.description)
        }
        return report
    }

    /// Repairs what `check` reports as repairable in the top disk (trailing leaked space is cut
    /// off; redundant grain tables are rewritten from the primary ones), and only when the
    /// check found no corruption. Returns the report of a check made after the repair.
    public static func repair(path: String, engine: IOEngine) async throws(DiskError) -> CheckReport {
        let before = await check(path: path, engine: engine)
        guard before.errors.isEmpty else {
            throw .invalidArgument("\(path) has corruptions that repair cannot fix safely: \(before.errors.joined(separator: "; "))")
        }
        if before.repairable.isEmpty { return before }
        let image = try await VMDKImage.open(path: path, writable: true, direct: false, engine: engine)
        for extent in image.extents {
            if case .sparse(let sparse) = extent.backing { try await sparse.repair() }
        }
        return await check(path: path, engine: engine)
    }
}

extension SparseExtent {
    /// Checks every grain table entry against the file and the redundant tables.
    func check(into report: inout CheckReport) async throws(DiskError) {
        let fileSectors = (try file.size() + 511) / 512
        let grains = try await allocatedGrains()
        var owners: [UInt32: Int] = [:]
        var end = metadataEndSector
        for (grain, entry) in grains {
            if entry == SparseExtent.zeroedEntry && header.flags.contains(.zeroedGrains) { continue }
            report.allocatedGrains += 1
            if let other = owners.updateValue(grain, forKey: entry) {
                report.errors.append("\(file.path): grains \(other) and \(grain) both point at sector \(entry)")
            }
            if isCompressed { continue }
            if UInt64(entry) < header.overheadSectors {
                report.errors.append("\(file.path): grain \(grain) at sector \(entry) overlaps the metadata (first \(header.overheadSectors) sectors)")
            }
            let grainEnd = UInt64(entry) + header.grainSectors
            if grainEnd > fileSectors {
                report.errors.append("\(file.path): grain \(grain) at sector \(entry) runs past the end of the file (\(fileSectors) sectors)")
            }
            end = max(end, grainEnd)
        }
        guard !isCompressed else { return }
        if fileSectors > end {
            report.leakedBytes += (fileSectors - end) * 512
            report.repairable.append("\(file.path): \((fileSectors - end) * 512) bytes after the last grain belong to no grain (leaked)")
        }
        for index in directory.indices {
            let (primary, redundant) = try await tablePair(index)
            guard let primary, let redundant, primary != redundant else { continue }
            let differing = zip(primary, redundant).enumerated().filter { $0.element.0 != $0.element.1 }.map(\.offset)
            report.repairable.append("\(file.path): redundant grain table \(index) differs from the primary in \(differing.count) entries (first: entry \(differing.first ?? 0))")
        }
    }

    /// The first sector after everything but the grains: the header's overhead, and the
    /// descriptor, directories and tables wherever the header and directories put them (a
    /// directory after the last grain is not leaked space).
    private var metadataEndSector: UInt64 {
        var end = header.overheadSectors
        if header.descriptorSectors > 0 { end = max(end, header.descriptorOffset + header.descriptorSectors) }
        end = max(end, header.directoryOffset + header.grainDirectorySectors)
        if redundantDirectory != nil { end = max(end, header.redundantDirectoryOffset + header.grainDirectorySectors) }
        for table in directory + (redundantDirectory ?? []) where table != 0 {
            end = max(end, UInt64(table) + header.grainTableSectors)
        }
        return end
    }

    /// The primary table as cached and the redundant one as on disk.
    private func tablePair(_ index: Int) async throws(DiskError) -> ([UInt32]?, [UInt32]?) {
        guard let redundantDirectory, redundantDirectory[index] != 0 else { return (nil, nil) }
        let primary = try await grainTable(index) ?? Array(repeating: 0, count: Int(header.entriesPerGrainTable))
        let bytes = try await file.readExactly(count: Int(header.entriesPerGrainTable) * 4, at: UInt64(redundantDirectory[index]) * 512, structure: "redundant grain table \(index)")
        return (primary, SparseExtent.decodeEntries(bytes))
    }

    /// Copies disagreeing primary tables over the redundant ones and cuts leaked space off.
    func repair() async throws(DiskError) {
        for index in directory.indices {
            let (primary, redundant) = try await tablePair(index)
            guard let primary, let redundant, primary != redundant, let redundantDirectory else { continue }
            var bytes = SparseExtent.encodeEntries(primary)
            bytes += [UInt8](repeating: 0, count: Int(header.grainTableSectors) * 512 - bytes.count)
            try await file.writeSectors(bytes, at: UInt64(redundantDirectory[index]) * 512)
        }
        var end = metadataEndSector
        for (_, entry) in try await allocatedGrains() where entry != SparseExtent.zeroedEntry || !header.flags.contains(.zeroedGrains) {
            end = max(end, UInt64(entry) + header.grainSectors)
        }
        if (try file.size() + 511) / 512 > end { try file.truncate(to: end * 512) }
        try await file.flush()
    }
}
