import Foundation

/// Hostile guests for the guest-boundary tests: small C programs with raw system calls and
/// no libc, built here with gcc (`-nostdlib -static`), each in a rootfs of its own at /prog.
/// `prelude` gives them what they need without libc: `sys(n, a...)`, `print`, `exit_now`,
/// and the engine's mailbox layout (so that a guest can post calls the way the stub does).
public enum HostileGuest {
    /// True when gcc can build the programs (the tests that need them skip otherwise).
    public static let isAvailable: Bool = FileManager.default.isExecutableFile(atPath: "/usr/bin/gcc")

    /// Declarations every hostile program may use. It defines `_start`, which calls
    /// `int main(void)` and exits with its result.
    public static let prelude = #"""
    typedef unsigned long u64;
    typedef unsigned int u32;
    typedef unsigned char u8;
    typedef long i64;
    static inline i64 sys6(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e, i64 f) {
        register i64 r10 __asm__("r10") = d;
        register i64 r8 __asm__("r8") = e;
        register i64 r9 __asm__("r9") = f;
        i64 ret;
        __asm__ volatile ("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
        return ret;
    }
    #define sys(...) sys_n(__VA_ARGS__, 0, 0, 0, 0, 0, 0, 0)
    #define sys_n(n, a, b, c, d, e, f, ...) sys6((n), (i64)(a), (i64)(b), (i64)(c), (i64)(d), (i64)(e), (i64)(f))
    #define SYS_read 0
    #define SYS_write 1
    #define SYS_open 2
    #define SYS_close 3
    #define SYS_mmap 9
    #define SYS_mprotect 10
    #define SYS_munmap 11
    #define SYS_brk 12
    #define SYS_sched_yield 24
    #define SYS_mremap 25
    #define SYS_nanosleep 35
    #define SYS_getpid 39
    #define SYS_exit 60
    #define SYS_fcntl 72
    #define SYS_getrandom 318
    #define PROT_NONE 0
    #define PROT_READ 1
    #define PROT_WRITE 2
    #define PROT_EXEC 4
    #define MAP_PRIVATE 0x02
    #define MAP_FIXED 0x10
    #define MAP_ANONYMOUS 0x20
    #define MREMAP_MAYMOVE 1
    /* The engine's mailbox page and its layout (SyscallStub.Offset, SystemArea.mailbox). */
    #define MAILBOX ((volatile u8 *)0xB000UL)
    #define MB_STATE (*(volatile u32 *)(MAILBOX + 0))
    #define MB_ACTIVE (*(volatile u32 *)(MAILBOX + 4))
    #define MB_NUMBER (*(volatile u64 *)(MAILBOX + 8))
    #define MB_ARG(i) (*(volatile u64 *)(MAILBOX + 16 + 8 * (i)))
    #define MB_RESULT (*(volatile u64 *)(MAILBOX + 72))
    static u64 slen(const char *s) { u64 n = 0; while (s[n]) n++; return n; }
    static void print(const char *s) { sys(SYS_write, 1, s, slen(s)); }
    static void print_hex(u64 v) {
        char b[19]; b[0] = '0'; b[1] = 'x';
        for (int i = 0; i < 16; i++) { int d = (v >> (60 - 4 * i)) & 15; b[2 + i] = d < 10 ? '0' + d : 'a' + d - 10; }
        b[18] = 0; print(b);
    }
    static __attribute__((noreturn)) void exit_now(int code) { for (;;) sys(SYS_exit, code); }
    static int streq(const char *a, const char *b) { while (*a && *a == *b) { a++; b++; } return *a == *b; }
    static int argc_;
    static char **argv_;
    /* argv_[1], or "" when the program has no argument. */
    static const char *role(void) { return argc_ > 1 ? argv_[1] : ""; }
    int main(void);
    __attribute__((noreturn, used)) void start_c(u64 *sp) { argc_ = (int)sp[0]; argv_ = (char **)(sp + 1); exit_now(main()); }
    __asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call start_c\n hlt\n");

    """#

    public enum BuildError: Error, CustomStringConvertible {
        case compilerFailed(String)
        public var description: String {
            switch self { case .compilerFailed(let output): return "gcc failed: \(output)" }
        }
    }

    /// Builds `source` (after the prelude) into a rootfs of its own at /prog and returns the
    /// rootfs. `linkerFlags` may move segments (for example `-Wl,-Ttext-segment=0x1000`).
    public static func rootfs(_ source: String, name: String = "hostile", linkerFlags: [String] = []) throws -> URL {
        let root = try HostFacts.makeTemporaryFolder(name)
        let sourceURL = root.appendingPathComponent("\(name).c")
        try (prelude + source).write(to: sourceURL, atomically: true, encoding: .utf8)
        let output = root.appendingPathComponent("prog").path
        let flags = ["-O1", "-nostdlib", "-static", "-no-pie", "-fno-pie", "-ffreestanding", "-fno-stack-protector",
                     "-fno-builtin", "-fcf-protection=none", "-o", output, sourceURL.path] + linkerFlags
        let result = try HostFacts.run("/usr/bin/gcc", flags)
        guard result.status == 0 else { throw BuildError.compilerFailed(result.stderr) }
        try FileManager.default.removeItem(at: sourceURL)
        return root
    }
}
