@testable import VCH
import API
import Foundation
import Testing

/// containers/create's body read by hand (`CreateBody.quick`) against its Decodable form:
/// whatever the fast path reads, JSONDecoder reads the same; the rest is left to it.
@Suite struct CreateBodyQuickTests {
    /// What the docker CLI 28.2 sent for `docker run --rm -e A=1 --label x=y --memory 64m --hostname h busybox echo hi`.
    static let cliBody = #"{"Hostname":"h","Domainname":"","User":"","AttachStdin":false,"AttachStdout":true,"AttachStderr":true,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":["A=1"],"Cmd":["echo","hi"],"Image":"busybox","Volumes":{},"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":{"x":"y"},"HostConfig":{"Binds":null,"ContainerIDFile":"","LogConfig":{"Type":"","Config":{}},"NetworkMode":"default","PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"AutoRemove":true,"VolumeDriver":"","VolumesFrom":null,"ConsoleSize":[0,0],"CapAdd":null,"CapDrop":null,"CgroupnsMode":"","Dns":[],"DnsOptions":[],"DnsSearch":[],"ExtraHosts":null,"GroupAdd":null,"IpcMode":"","Cgroup":"","Links":null,"OomScoreAdj":0,"PidMode":"","Privileged":false,"PublishAllPorts":false,"ReadonlyRootfs":false,"SecurityOpt":null,"UTSMode":"","UsernsMode":"","ShmSize":0,"Isolation":"","CpuShares":0,"Memory":67108864,"NanoCpus":0,"CgroupParent":"","BlkioWeight":0,"BlkioWeightDevice":[],"BlkioDeviceReadBps":[],"BlkioDeviceWriteBps":[],"BlkioDeviceReadIOps":[],"BlkioDeviceWriteIOps":[],"CpuPeriod":0,"CpuQuota":0,"CpuRealtimePeriod":0,"CpuRealtimeRuntime":0,"CpusetCpus":"","CpusetMems":"","Devices":[],"DeviceCgroupRules":null,"DeviceRequests":null,"MemoryReservation":0,"MemorySwap":0,"MemorySwappiness":-1,"OomKillDisable":false,"PidsLimit":0,"Ulimits":[],"CpuCount":0,"CpuPercent":0,"IOMaximumIOps":0,"IOMaximumBandwidth":0,"MaskedPaths":null,"ReadonlyPaths":null},"NetworkingConfig":{"EndpointsConfig":{"default":{"IPAMConfig":null,"Links":null,"Aliases":null,"MacAddress":"","DriverOpts":null,"GwPriority":0,"NetworkID":"","EndpointID":"","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"DNSNames":null}}}}"#

    /// Every field the VCH reads, in one line, to compare the two readings.
    static func summary(_ body: CreateBody) -> String {
        let host = body.HostConfig.map { host in
            "host(memory: \(String(describing: host.Memory)), autoRemove: \(String(describing: host.AutoRemove)), network: \(String(describing: host.NetworkMode)), "
                + "restart: \(String(describing: host.RestartPolicy.map { String(describing: $0.Name) })), swap: \(String(describing: host.MemorySwap)), refused: \(host.refused.sorted()))"
        } ?? "no host"
        return "image: \(String(describing: body.Image)), hostname: \(String(describing: body.Hostname)), env: \(String(describing: body.Env)), cmd: \(String(describing: body.Cmd)), "
            + "entrypoint: \(String(describing: body.Entrypoint)), labels: \(String(describing: body.Labels?.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })), "
            + "tty: \(String(describing: body.Tty)), open: \(String(describing: body.OpenStdin)), once: \(String(describing: body.StdinOnce)), "
            + "attach: \(String(describing: body.AttachStdin)), refused: \(body.refused.sorted()), \(host)"
    }

    static func decoded(_ text: String) -> CreateBody? { try? JSONDecoder().decode(CreateBody.self, from: Data(text.utf8)) }

    @Test func theCLIsBodyIsReadAsTheDecoderReadsIt() throws {
        let quick = try #require(CreateBody.quick(from: Data(Self.cliBody.utf8)))
        let decoded = try #require(Self.decoded(Self.cliBody))
        #expect(Self.summary(quick) == Self.summary(decoded))
        #expect(quick.Image == "busybox" && quick.Env == ["A=1"] && quick.HostConfig?.Memory == 64 << 20 && quick.HostConfig?.AutoRemove == true)
        #expect(quick.refused.isEmpty && quick.HostConfig?.refused.isEmpty == true)
    }

    @Test(arguments: [
        (#""User":"root""#, #""User":"""#), (#""WorkingDir":"/tmp""#, #""WorkingDir":"""#), (#""Volumes":{"/data":{}}"#, #""Volumes":{}"#),
        (#""Privileged":true"#, #""Privileged":false"#), (#""CpuShares":512"#, #""CpuShares":0"#), (#""Binds":["/a:/b"]"#, #""Binds":null"#),
        (#""PortBindings":{"80/tcp":[{"HostPort":"8080"}]}"#, #""PortBindings":{}"#), (#""NetworkMode":"host""#, #""NetworkMode":"default""#),
        (#""RestartPolicy":{"Name":"always","MaximumRetryCount":0}"#, #""RestartPolicy":{"Name":"no","MaximumRetryCount":0}"#),
        (#""MemorySwap":-1"#, #""MemorySwap":0"#), (#""NetworkMode":5"#, #""NetworkMode":"default""#), (#""RestartPolicy":"always""#, #""RestartPolicy":{"Name":"no","MaximumRetryCount":0}"#),
        (#""RestartPolicy":{"Name":7}"#, #""RestartPolicy":{"Name":"no","MaximumRetryCount":0}"#), (#""MemorySwap":"x""#, #""MemorySwap":0"#),
        (#""Entrypoint":["sh","-c"]"#, #""Entrypoint":null"#), (#""Tty":true"#, #""Tty":false"#), (#""CpuShares":-0.0"#, #""CpuShares":0"#),
    ])
    func optionsInTheCLIsBodyAreReadAsTheDecoderReadsThem(set: String, unset: String) throws {
        let text = Self.cliBody.replacingOccurrences(of: unset, with: set)
        #expect(text != Self.cliBody, "\(unset) is not in the CLI's body")
        let quick = try #require(CreateBody.quick(from: Data(text.utf8)), "the fast path gave up on \(set)")
        let decoded = try #require(Self.decoded(text))
        #expect(Self.summary(quick) == Self.summary(decoded), "\(set)")
    }

    @Test(arguments: [
        #"{"Image":5}"#, #"{"Env":["A",null]}"#, #"{"Labels":{"a":1}}"#, #"{"HostConfig":{"Memory":1.5}}"#, #"{"HostConfig":{"Memory":"64"}}"#,
        #"{"HostConfig":[]}"#, #"{"HostConfig":{"MemorySwap":1e3}}"#, #"{"User":1e999}"#, #"{"Image":"a","Image":"b"}"#, #"{"Tty":"yes"}"#, #"{"Image":"a"} {"#,
    ])
    func bodiesItCannotReadExactlyAreLeftToTheDecoder(text: String) {
        #expect(CreateBody.quick(from: Data(text.utf8)) == nil, "\(text)")
    }

    /// Random damage to the CLI's body: the fast path either gives up or reads what the decoder reads.
    @Test func damagedBodiesAgreeWithTheDecoder() {
        var generator = SystemRandomNumberGenerator()
        let original = Array(Self.cliBody.utf8)
        var read = 0
        for _ in 0..<3000 {
            var damaged = original
            for _ in 0..<Int.random(in: 1...2, using: &generator) {
                let at = Int.random(in: 0..<damaged.count, using: &generator)
                switch Int.random(in: 0..<3, using: &generator) {
                case 0: damaged[at] = Array(#"",:{}[]\-0e.tn1 "#.utf8).randomElement(using: &generator)!
                case 1: damaged.remove(at: at)
                default: damaged.insert(Array(#"",:{}[]0"#.utf8).randomElement(using: &generator)!, at: at)
                }
            }
            guard let quick = CreateBody.quick(from: Data(damaged)) else { continue }
            read += 1
            let text = String(decoding: damaged, as: UTF8.self)
            guard let decoded = Self.decoded(text) else {
                Issue.record("the fast path read what the decoder refuses: \(text)")
                continue
            }
            #expect(Self.summary(quick) == Self.summary(decoded), "\(text)")
        }
        #expect(read > 100)
    }
}
