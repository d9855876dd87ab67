@testable import ProcessVM
import Testing

/// How the loader turns segments into runs of pages, with no VM: the busybox tests load
/// real executables; these pin the cases busybox may not show.
struct ProgramLoaderTests {
    private func segment(_ start: UInt64, _ end: UInt64, _ permissions: PagePermissions) -> ELFImage.Segment {
        ELFImage.Segment(fileOffset: 0, fileSize: 0, virtualAddress: start, memorySize: end - start, permissions: permissions.union(.user))
    }

    @Test func aSharedPageGetsBothSegmentsPermissionsAndGapsStayUnmapped() throws {
        let runs = try ProgramLoader.pageRuns(of: [
            segment(0x40_0000, 0x40_0800, [.read]),
            segment(0x40_0800, 0x40_2100, [.read, .execute]),
            segment(0x40_2100, 0x40_2200, [.read, .execute]),
            segment(0x40_4010, 0x40_5000, [.read, .write]),
        ], bias: 0x1000_0000)
        #expect(runs == [
            ProgramLoader.PageRun(pages: 0x1040_0000..<0x1040_1000, permissions: [.read, .execute, .user], shared: true),
            ProgramLoader.PageRun(pages: 0x1040_1000..<0x1040_2000, permissions: [.read, .execute, .user], shared: false),
            ProgramLoader.PageRun(pages: 0x1040_2000..<0x1040_3000, permissions: [.read, .execute, .user], shared: true),
            ProgramLoader.PageRun(pages: 0x1040_4000..<0x1040_5000, permissions: [.read, .write, .user], shared: false),
        ])
    }

    @Test func aSegmentPastTheTopOfTheAddressSpaceIsRefused() {
        #expect(throws: GuestError.self) {
            try ProgramLoader.pageRuns(of: [segment(UInt64.max - 0x1800, UInt64.max - 0x800, [.read])], bias: 0)
        }
    }
}
