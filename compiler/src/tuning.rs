//! The environment variables that change the code `maxc` generates (tuning knobs read by
//! the lowering and the GPU kernel builders), so caches of compiled output can key on them.

/// Every `MAX_*` variable the compiler reads while generating code. A variable read in
/// `compiler/src` and missing here fails the `knobs_are_complete` test.
pub const KNOBS: &[&str] = &[
    "MAX_BLOCKED_MIN_A_BYTES",
    "MAX_COLUMN_SPLIT_ROWS",
    "MAX_CUDA_TOOLKIT",
    "MAX_GEMV_PREFETCH",
    "MAX_GPU_ATTENTION",
    "MAX_GPU_GEMV",
    "MAX_GPU_GRIDDEP",
    "MAX_GPU_NO_WGMMA",
    "MAX_GPU_QDOT",
    "MAX_GPU_QMATMUL",
    "MAX_GPU_WGMMA",
    "MAX_MATMUL_LANES",
    "MAX_PACK_MIN_BYTES",
    "MAX_ZERO_SKIP",
];

/// Applies a tuning knob's `key=value` settings (`MAX_GPU_GEMV=lanes=2,ahead=8`): `value`
/// is the variable's value (`name` names it in warnings), each setting's value an integer.
/// `apply` returns whether it took a setting; one it refuses, or that does not parse, is
/// ignored with a warning.
pub fn apply_settings(name: &str, value: Option<String>, mut apply: impl FnMut(&str, i64) -> bool) {
    for kv in value.iter().flat_map(|v| v.split(',')).filter(|s| !s.trim().is_empty()) {
        let taken = kv.split_once('=').is_some_and(|(k, v)| v.trim().parse().is_ok_and(|x| apply(k.trim(), x)));
        if !taken {
            tracing::warn!("{name}: ignoring {kv:?}");
        }
    }
}

/// The knobs set in this process's environment, as `NAME=value;` pairs in [`KNOBS`] order
/// (empty when none is set), for a cache key.
pub fn env_stamp() -> String {
    stamp(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
}

fn stamp(lookup: impl Fn(&str) -> Option<String>) -> String {
    KNOBS.iter().filter_map(|name| lookup(name).map(|v| format!("{name}={v};"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_names_each_set_knob() {
        assert_eq!(stamp(|_| None), "");
        let set = |name: &str| (name == "MAX_ZERO_SKIP").then(|| "0".to_string());
        assert_eq!(stamp(set), "MAX_ZERO_SKIP=0;");
        let all = stamp(|_| Some("1".into()));
        assert_eq!(all.matches('=').count(), KNOBS.len());
    }

    /// Every `env::var("MAX_...")` and `env::var_os("MAX_...")` in the compiler's sources is
    /// a knob, so a new one cannot be left out of the cache key.
    #[test]
    fn knobs_are_complete() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut read = Vec::new();
        let mut dirs = vec![src];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tuning.rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for part in text.split("env::var(\"").skip(1).chain(text.split("env::var_os(\"").skip(1)) {
                        let name = part.split('"').next().unwrap();
                        if name.starts_with("MAX_") {
                            read.push((name.to_string(), path.display().to_string()));
                        }
                    }
                }
            }
        }
        assert!(read.len() >= KNOBS.len(), "found only {read:?}");
        for (name, file) in read {
            assert!(KNOBS.contains(&name.as_str()), "{file} reads {name}, which tuning::KNOBS lacks");
        }
    }
}
