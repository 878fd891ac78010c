//! Headless Chromium (Debian's `chromium`) for tests that look at the viewer as drawn:
//! its DOM after the page's scripts ran, or a screenshot. Behind the `testing` feature.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Chromium is installed, if it is.
pub fn browser() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Chromium, or `None` (the test is skipped) when it is not installed; under `CI=true` a
/// missing browser fails the test instead.
pub fn browser_or_skip() -> Option<PathBuf> {
    let bin = browser();
    if bin.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing: apt-get install chromium (.ci/run does)"
        );
        eprintln!("skipped: chromium is not installed");
    }
    bin
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or `--screenshot=FILE`).
pub fn chromium(bin: &Path, profile: &Path, action: &str, url: &str) -> Vec<u8> {
    chromium_for(bin, profile, action, url, 5_000)
}

/// [`chromium`] with `budget_ms` of the page's virtual time. Chromium is given that plus a
/// minute of the clock on the wall: a headless Chromium that hangs (seen once on a
/// screenshot of the 100,000-span trace) is killed, with its helpers, and run once more on
/// a fresh profile; hanging twice fails the test.
pub fn chromium_for(
    bin: &Path,
    profile: &Path,
    action: &str,
    url: &str,
    budget_ms: u64,
) -> Vec<u8> {
    let limit = std::time::Duration::from_millis(budget_ms) + std::time::Duration::from_secs(60);
    let retry = profile.with_extension("retry");
    for profile in [profile, retry.as_path()] {
        if let Some(out) = chromium_within(bin, profile, action, url, budget_ms, limit) {
            return out;
        }
        eprintln!("chromium hung on {url} for {limit:?}: killed, run again");
    }
    panic!("chromium hung twice on {url} (each time over {limit:?})");
}

/// One headless Chromium run; `None` when it did not end within `limit`.
fn chromium_within(
    bin: &Path,
    profile: &Path,
    action: &str,
    url: &str,
    budget_ms: u64,
    limit: std::time::Duration,
) -> Option<Vec<u8>> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(profile).expect("profile directory");
    let stdout = profile.with_extension("stdout");
    let stderr = profile.with_extension("stderr");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,800",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(action)
        .arg(url)
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        // Its own process group, so that its renderer and GPU helpers go with it.
        .process_group(0)
        .spawn()
        .expect("chromium runs");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("chromium's status") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "chromium failed on {url}: {}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    Some(std::fs::read(&stdout).expect("chromium's output"))
}
