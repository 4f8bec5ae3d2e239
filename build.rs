//! Tells the tests which vector extensions the machine that builds (and, for `cargo test`,
//! runs) them has, so that a kernel test this CPU cannot run is ignored with its reason instead
//! of passing without running.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(host_avx2)");
    println!("cargo::rustc-check-cfg=cfg(host_avx512)");
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            println!("cargo::rustc-cfg=host_avx2");
        }
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") {
            println!("cargo::rustc-cfg=host_avx512");
        }
    }
}
