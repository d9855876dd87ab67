#if canImport(Glibc)
import Glibc
#endif

/// This process's own descriptor limit (RLIMIT_NOFILE). Every VM costs the engine a few
/// descriptors (its KVM VM and vCPU, its memory's memfd) and its guest holds more, so the
/// soft limit, often 1,024, would cap the engine at a few VMs while the hard limit allows many.
public enum DescriptorLimit {
    /// The soft limit in force, raised to the hard limit the first time it is read.
    public static let raised: Int = {
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        var limit = rlimit()
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var wanted = limit
            wanted.rlim_cur = limit.rlim_max
            if setrlimit(resource, &wanted) == 0 { limit = wanted }
        }
        return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }()
}
