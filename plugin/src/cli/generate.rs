//! `airlift generate`: the man pages (clap_mangen) and shell completions (clap_complete), made
//! from the one clap definition so they never drift from the binary; `integration/dist.sh`
//! puts them in the release tarball and the .deb.

use super::args::{Cli, Generate, GenerateArgs};
use clap::CommandFactory;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `airlift generate man DIR` / `airlift generate completions SHELL [DIR]`.
pub fn run(args: GenerateArgs) -> ExitCode {
    let done = match args.what {
        Generate::Man { dir } => man(&dir).map(|_| ()),
        Generate::Completions { shell, dir } => completions(shell, dir.as_deref()),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlift: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A man page per visible command into `dir`: `airlift.1`, then `airlift-import.1` and one for
/// every other subcommand (nested ones as `airlift-a-b.1`). No date in them: the same binary
/// writes the same bytes. Returns the files written.
pub fn man(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    // Building names every subcommand for its page (`airlift-import`, `airlift import`).
    cmd.build();
    let mut written = Vec::new();
    page(&cmd, dir, &mut written)?;
    Ok(written)
}

fn page(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    let mut roff = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut roff)?;
    std::fs::write(&path, roff)?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            page(sub, dir, written)?;
        }
    }
    Ok(())
}

/// `shell`'s completions into `dir` under the name that shell looks for, or to standard output.
pub fn completions(shell: clap_complete::Shell, dir: Option<&Path>) -> std::io::Result<()> {
    let mut cmd = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_complete::generate_to(shell, &mut cmd, "airlift", dir)?;
        }
        None => clap_complete::generate(shell, &mut cmd, "airlift", &mut std::io::stdout()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_man_page_per_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        let written = man(dir.path()).unwrap();
        let mut names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for want in [
            "airlift.1",
            "airlift-import.1",
            "airlift-serve.1",
            "airlift-verify.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        assert!(!names
            .iter()
            .any(|n| n.contains("generate") || n.contains("help")));
        let import = std::fs::read_to_string(dir.path().join("airlift-import.1")).unwrap();
        assert!(import.starts_with(".ie") || import.contains(".TH airlift-import"));
        assert!(import.contains("unpack"), "{import}");
        // Written twice, the same bytes.
        let again = tempfile::tempdir().unwrap();
        man(again.path()).unwrap();
        for n in &names {
            assert_eq!(
                std::fs::read(dir.path().join(n)).unwrap(),
                std::fs::read(again.path().join(n)).unwrap(),
                "{n}"
            );
        }
    }

    #[test]
    fn completions_for_each_shell() {
        let dir = tempfile::tempdir().unwrap();
        use clap_complete::Shell;
        for (shell, file) in [
            (Shell::Bash, "airlift.bash"),
            (Shell::Zsh, "_airlift"),
            (Shell::Fish, "airlift.fish"),
        ] {
            completions(shell, Some(dir.path())).unwrap();
            let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
            assert!(
                text.contains("import") && text.contains("--unpack"),
                "{file}"
            );
        }
    }
}
