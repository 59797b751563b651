//! The README tells the truth: its embedded examples are the files in
//! `config/examples/`, and every error code and subcommand is documented.

mod common;

use sssonector_actors::ErrorCode;

fn readme() -> String {
    std::fs::read_to_string(common::repo().join("README.md")).expect("README.md exists")
}

#[test]
fn the_readme_embeds_the_example_configs_verbatim() {
    let readme = readme();
    for name in ["server.yaml", "client.yaml"] {
        let file = std::fs::read_to_string(common::repo().join("config/examples").join(name))
            .expect("example exists");
        assert!(
            readme.contains(&format!("```yaml\n{file}```")),
            "README's copy of {name} differs from config/examples/{name}"
        );
    }
}

#[test]
fn the_readme_documents_every_error_code() {
    let readme = readme();
    for &code in ErrorCode::ALL {
        assert!(
            readme.contains(&format!("`{code}`")),
            "{code} is not in the README"
        );
    }
}

/// The fenced `sh` block that follows the first paragraph containing `intro`.
fn command_after(readme: &str, intro: &str) -> String {
    let at = readme
        .find(intro)
        .unwrap_or_else(|| panic!("README says {intro:?}"));
    let rest = &readme[at..];
    let open = rest.find("```sh\n").expect("a sh block follows") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block ends");
    rest[open..open + close].trim().to_owned()
}

#[test]
fn the_readme_test_command_needs_no_sudo_and_is_what_ci_runs() {
    let readme = readme();
    let command = command_after(&readme, "run every test");
    assert_eq!(command, "bash .ci/test", "Debian minimal has no sudo");
    let ci = std::fs::read_to_string(common::repo().join(".ci/run")).expect(".ci/run exists");
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run does not call {command:?}"
    );
}

#[test]
fn the_readme_points_only_at_files_in_the_repository() {
    let readme = readme();
    assert!(
        !readme.contains("../"),
        "README points outside the repository: {:?}",
        readme.lines().find(|l| l.contains("../"))
    );
    // Markdown links to relative paths name files that exist here.
    for piece in readme.split("](").skip(1) {
        let target = piece.split(')').next().expect("a link target");
        let path = target.split('#').next().expect("a path");
        if path.is_empty() || path.contains("://") {
            continue;
        }
        assert!(
            common::repo().join(path).exists(),
            "README links to {target}, which is not in the repository"
        );
    }
}

#[test]
fn the_license_file_is_the_license_cargo_declares() {
    let manifest =
        std::fs::read_to_string(common::repo().join("Cargo.toml")).expect("Cargo.toml exists");
    assert!(
        manifest.contains("license = \"Apache-2.0\""),
        "Cargo.toml names Apache-2.0"
    );
    let license =
        std::fs::read_to_string(common::repo().join("LICENSE")).expect("a LICENSE file exists");
    assert!(
        license.contains("Apache License") && license.contains("Version 2.0, January 2004"),
        "LICENSE is not the Apache License 2.0"
    );
}
