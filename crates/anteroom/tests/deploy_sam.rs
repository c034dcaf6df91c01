//! `anteroom deploy sam`: the template and code directory it writes for the
//! examples. `.ci/run` also runs `cfn-lint` on every example's template; this
//! suite checks what the template must say for each schema.

mod common;

use std::path::Path;

use common::{cli, repo_root};

fn deploy(schema: &Path, extra: &[&str]) -> (tempfile::TempDir, String) {
    let out = tempfile::tempdir().expect("temp dir");
    let out_dir = out.path().join("deploy");
    let mut args = vec![
        "deploy",
        "sam",
        schema.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = cli(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("cargo lambda build --release"),
        "{}",
        run.stdout
    );
    let template = std::fs::read_to_string(out_dir.join("template.yaml")).expect("template");
    (out, template)
}

#[test]
fn every_secret_the_schema_reads_becomes_a_parameter_that_is_never_echoed() {
    let schema = repo_root().join("examples/office-hours/anteroom.toml");
    let (out, template) = deploy(&schema, &[]);
    for (param, env) in [
        ("AppToken", "APP_TOKEN"),
        ("AdvisorJwtSecret", "ADVISOR_JWT_SECRET"),
    ] {
        assert!(
            template.contains(&format!(
                "  {param}:\n    Type: \"String\"\n    NoEcho: true\n    MinLength: 32\n"
            )),
            "{param}:\n{template}"
        );
        assert!(
            template.contains(&format!("          {env}:\n            Ref: \"{param}\"\n")),
            "{env}:\n{template}"
        );
    }
    assert!(template.contains("Runtime: \"provided.al2023\""));
    assert!(template.contains("Type: \"AWS::Serverless::HttpApi\""));
    assert!(template.contains("Path: \"/{proxy+}\""));
    // No authorizer: this schema verifies its own credentials.
    assert!(!template.contains("Authorizers"), "{template}");
    // The function's code directory holds the schema under the name it looks for.
    let copied = std::fs::read_to_string(out.path().join("deploy/function/anteroom.toml")).unwrap();
    assert_eq!(copied, std::fs::read_to_string(&schema).unwrap());
}

#[test]
fn key_files_the_schema_names_are_copied_beside_it() {
    let schema = repo_root().join("examples/courses/anteroom.toml");
    let (out, template) = deploy(&schema, &["--arch", "x86_64"]);
    assert!(template.contains("Default: \"x86_64\""), "{template}");
    let key = out.path().join("deploy/function/keys/demo_public.pem");
    assert_eq!(
        std::fs::read(&key).expect("the key file"),
        std::fs::read(repo_root().join("examples/courses/keys/demo_public.pem")).unwrap()
    );
}

#[test]
fn the_sql_files_of_migrations_go_with_the_schema() {
    let (dir, schema) = common::schema_dir(
        &std::fs::read_to_string(repo_root().join("examples/office-hours/anteroom.toml")).unwrap(),
    );
    std::fs::create_dir(dir.path().join("migrations")).unwrap();
    let sql = "UPDATE advisors SET name = TRIM(name);\n";
    std::fs::write(dir.path().join("migrations/001_trim.sql"), sql).unwrap();
    std::fs::write(dir.path().join("migrations/notes.txt"), "not SQL").unwrap();
    let (out, _) = deploy(&schema, &[]);
    let folder = out.path().join("deploy/function/migrations");
    assert_eq!(
        std::fs::read_to_string(folder.join("001_trim.sql")).unwrap(),
        sql
    );
    assert!(
        !folder.join("notes.txt").exists(),
        "only .sql files are migrations"
    );
}

#[test]
fn trusted_gateway_claims_get_the_authorizer_they_come_from_and_meta_routes_stay_public() {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lambda/anteroom.toml");
    let (_out, http) = deploy(&schema, &[]);
    assert!(http.contains("DefaultAuthorizer: \"Jwt\""), "{http}");
    assert!(
        http.contains("issuer:\n                Ref: \"JwtIssuer\""),
        "{http}"
    );
    let (_out, rest) = deploy(&schema, &["--api", "rest", "--vpc", "--rds-iam"]);
    assert!(rest.contains("Type: \"AWS::Serverless::Api\""));
    assert!(rest.contains("DefaultAuthorizer: \"Cognito\""), "{rest}");
    assert!(
        rest.contains("Path: \"/health\"\n            Method: \"GET\"\n            Auth:\n              Authorizer: \"NONE\""),
        "{rest}"
    );
    assert!(rest.contains("SubnetIds:\n    Type: \"List<AWS::EC2::Subnet::Id>\""));
    assert!(rest.contains("Action: \"rds-db:connect\""));
    assert!(rest.contains("dbuser:${DbResourceId}/${DbUser}"));
}

#[test]
fn an_invalid_schema_writes_nothing() {
    let (dir, path) = common::schema_dir("[app]\nname = 1\n");
    let out = dir.path().join("deploy");
    let run = cli(&[
        "deploy",
        "sam",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!out.exists());
}
