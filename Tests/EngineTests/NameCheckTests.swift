@testable import Engine
import Testing

/// Names (images, containers) and hostnames, checked byte by byte.
@Suite struct NameCheckTests {
    @Test func namesAreASCIILettersDigitsDotsUnderscoresAndDashes() {
        for good in ["a", "busybox", "Web_1.2-b", "0abc", String(repeating: "x", count: 63)] { #expect(Engine.validName(good), "\(good)") }
        for bad in ["", "-a", ".a", "_a", "a b", "a/b", "é", "aé", "a\u{0}", "a:b", String(repeating: "x", count: 64)] {
            #expect(!Engine.validName(bad), "\(bad)")
        }
        #expect(Engine.validName(String(repeating: "x", count: 100), maxLength: 100))
    }

    @Test func hostnamesAreASCIILettersDigitsDashesAndDots() {
        for good in ["a", "web-1.example", "-x", "x.", String(repeating: "h", count: 64)] { #expect(Engine.validHostname(good), "\(good)") }
        for bad in ["", "a_b", "a b", "hé", "a\u{0}", String(repeating: "h", count: 65)] { #expect(!Engine.validHostname(bad), "\(bad)") }
    }
}
