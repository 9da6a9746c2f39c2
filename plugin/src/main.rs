//! The `airlift` binary: parse the command line and hand over to the library.

fn main() -> std::process::ExitCode {
    // Crash points (`FAILPOINTS`), in builds with the `failpoints` feature only.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    airlift::cli::main()
}
