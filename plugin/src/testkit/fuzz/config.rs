//! The `config` target: the daemon's configuration file.

/// TOML text as the daemon's configuration file: a configuration that parses is valid, and its
/// derived settings can all be had.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = match crate::config::Config::parse(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(c.validate().is_ok(), "parsed, yet invalid: {c:?}");
    assert!(c.platform_policy().is_ok() && c.priority_set().is_ok());
    let _ = c.settle();
    let dirs = c.watched_dirs();
    let follow = usize::from(!c.follow.is_empty());
    assert_eq!(
        dirs.len(),
        c.images_dirs.len() + c.intake_dirs.len() + follow
    );
    for d in &c.intake_dirs {
        assert!(c.is_intake(&d.join("archive.tar")), "{d:?}");
    }
}
