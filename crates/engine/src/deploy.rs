//! `anteroom deploy sam`: an AWS SAM template for a schema. The function is
//! this binary as `bootstrap` on `provided.al2023` (arm64 or x86_64) behind
//! an HTTP API or a REST API; the template's parameters carry the database
//! URL, the secrets `[auth]` names (no echo), the VPC and the IAM database
//! user, and a schema with `[auth.gateway_claims]` gets the authorizer those
//! claims come from (a JWT authorizer on an HTTP API, Cognito on a REST
//! API). The template is built as JSON values and written as YAML.

use std::fmt::Write as _;

use serde_json::{Map, Value as Json, json};

use crate::schema::{AppModel, JwtKeySource};

/// Which API Gateway fronts the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiKind {
    /// HTTP API (payload 2.0): cheaper and faster; JWT authorizer.
    Http,
    /// REST API (payload 1.0): stages, usage plans; Cognito authorizer.
    Rest,
}

/// The function's processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Architecture {
    /// Graviton (`cargo lambda build --release --arm64`).
    Arm64,
    /// Intel/AMD (`cargo lambda build --release --x86-64`).
    #[value(name = "x86_64")]
    X86_64,
}

/// What the template holds besides the schema's own needs.
#[derive(Debug, Clone)]
pub struct SamOptions {
    /// The gateway.
    pub api: ApiKind,
    /// The default architecture parameter.
    pub architecture: Architecture,
    /// Run in a VPC (subnets and security groups as parameters): needed for
    /// a database without a public address.
    pub vpc: bool,
    /// Connect to RDS with IAM database authentication (a policy allowing
    /// `rds-db:connect` for the database user).
    pub rds_iam: bool,
    /// Where the function's code is, relative to the template.
    pub code_uri: String,
}

/// A CloudFormation parameter name for an environment variable: `APP_TOKEN` → `AppToken`.
fn parameter_name(env: &str) -> String {
    env.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            let mut chars = lower.chars();
            chars.next().map_or(String::new(), |c| {
                c.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The environment variables holding the secrets `[auth]` names.
pub fn secret_envs(model: &AppModel) -> Vec<String> {
    let Some(auth) = &model.auth else {
        return Vec::new();
    };
    let mut envs = Vec::new();
    if let Some(JwtKeySource::SecretEnv(env)) = auth.jwt.as_ref().map(|j| &j.key) {
        envs.push(env.clone());
    }
    if let Some(key) = &auth.api_key {
        envs.push(key.env.clone());
    }
    if let Some(accounts) = &auth.accounts {
        envs.push(accounts.secret_env.clone());
    }
    envs.dedup();
    envs
}

/// The files besides the schema the function reads (key files named by
/// `[auth.jwt]`, relative to the schema).
pub fn companion_files(model: &AppModel) -> Vec<String> {
    match model
        .auth
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .map(|j| &j.key)
    {
        Some(JwtKeySource::PublicKeyFile(f) | JwtKeySource::JwksFile(f)) => vec![f.clone()],
        _ => Vec::new(),
    }
}

fn reference(name: &str) -> Json {
    json!({"Ref": name})
}

/// The SAM template for `model`, as YAML.
pub fn sam(model: &AppModel, options: &SamOptions) -> String {
    let gateway = model
        .auth
        .as_ref()
        .and_then(|a| a.gateway.as_ref())
        .is_some();
    let mut parameters = Map::new();
    parameters.insert(
        "Architecture".into(),
        json!({
            "Type": "String",
            "Default": match options.architecture { Architecture::Arm64 => "arm64", Architecture::X86_64 => "x86_64" },
            "AllowedValues": ["arm64", "x86_64"],
            "Description": "The processor the bootstrap binary was built for",
        }),
    );
    parameters.insert(
        "DatabaseUrl".into(),
        json!({
            "Type": "String",
            "NoEcho": true,
            "Default": "sqlite:///tmp/anteroom.db",
            "Description": "postgres://user@host:5432/db or mysql://user@host:3306/db; the default SQLite file in /tmp lives as long as one execution environment (a demo, not a database)",
        }),
    );
    parameters.insert(
        "MigrateOnStart".into(),
        json!({
            "Type": "String",
            "Default": "check",
            "AllowedValues": ["check", "apply"],
            "Description": "check: a cold start refuses a database behind the schema (run `anteroom migrate` as a deploy step); apply: every cold start migrates under the database's lock. A SQLite file in /tmp always applies.",
        }),
    );
    parameters.insert(
        "StageName".into(),
        json!({"Type": "String", "Default": "dev", "Description": "The API stage; its name is the first segment of every URL"}),
    );
    let mut variables = Map::new();
    variables.insert("DATABASE_URL".into(), reference("DatabaseUrl"));
    variables.insert(
        "ANTEROOM_MIGRATE".into(),
        json!({"Fn::If": ["SqliteInTmp", "apply", {"Ref": "MigrateOnStart"}]}),
    );
    if options.rds_iam {
        variables.insert("ANTEROOM_RDS_IAM".into(), json!("true"));
    }
    for env in secret_envs(model) {
        let name = parameter_name(&env);
        parameters.insert(
            name.clone(),
            json!({"Type": "String", "NoEcho": true, "MinLength": 32, "Description": format!("The secret the schema reads from {env} (at least 32 bytes)")}),
        );
        variables.insert(env, reference(&name));
    }
    let mut properties = json!({
        "CodeUri": options.code_uri,
        "Handler": "bootstrap",
        "Runtime": "provided.al2023",
        "Architectures": [reference("Architecture")],
        "MemorySize": 256,
        "Timeout": 29,
        "Environment": {"Variables": Json::Object(variables)},
    });
    let mut policies = Vec::new();
    if options.vpc {
        parameters.insert(
            "SubnetIds".into(),
            json!({"Type": "List<AWS::EC2::Subnet::Id>", "Description": "Private subnets that reach the database"}),
        );
        parameters.insert(
            "SecurityGroupIds".into(),
            json!({"Type": "List<AWS::EC2::SecurityGroup::Id>", "Description": "Security groups the database accepts"}),
        );
        properties["VpcConfig"] = json!({
            "SubnetIds": reference("SubnetIds"),
            "SecurityGroupIds": reference("SecurityGroupIds"),
        });
        policies.push(json!("AWSLambdaVPCAccessExecutionRole"));
    }
    if options.rds_iam {
        parameters.insert(
            "DbResourceId".into(),
            json!({"Type": "String", "AllowedPattern": "db-[A-Z0-9]+|cluster-[A-Z0-9]+", "Description": "The RDS instance's (db-…) or Aurora cluster's (cluster-…) resource id"}),
        );
        parameters.insert(
            "DbUser".into(),
            json!({"Type": "String", "Description": "The database user granted rds_iam (PostgreSQL) or AWSAuthenticationPlugin (MySQL)"}),
        );
        policies.push(json!({"Statement": [{
            "Effect": "Allow",
            "Action": "rds-db:connect",
            "Resource": {"Fn::Sub": "arn:${AWS::Partition}:rds-db:${AWS::Region}:${AWS::AccountId}:dbuser:${DbResourceId}/${DbUser}"},
        }]}));
    }
    if !policies.is_empty() {
        properties["Policies"] = Json::Array(policies);
    }

    let (api_type, api_resource, api_ref_key, event_type) = match options.api {
        ApiKind::Http => ("AWS::Serverless::HttpApi", "HttpApi", "ApiId", "HttpApi"),
        ApiKind::Rest => ("AWS::Serverless::Api", "RestApi", "RestApiId", "Api"),
    };
    let mut api = json!({"Type": api_type, "Properties": {"StageName": reference("StageName")}});
    if gateway {
        let authorizer = match options.api {
            ApiKind::Http => {
                parameters.insert("JwtIssuer".into(), json!({"Type": "String", "Description": "The token issuer, e.g. https://cognito-idp.REGION.amazonaws.com/POOL_ID"}));
                parameters.insert("JwtAudience".into(), json!({"Type": "String", "Description": "The audience tokens are for (a Cognito app client id)"}));
                json!({"Authorizers": {"Jwt": {
                    "IdentitySource": "$request.header.Authorization",
                    "JwtConfiguration": {"issuer": reference("JwtIssuer"), "audience": [reference("JwtAudience")]},
                }}, "DefaultAuthorizer": "Jwt"})
            }
            ApiKind::Rest => {
                parameters.insert("UserPoolArn".into(), json!({"Type": "String", "Description": "The Cognito user pool whose ID tokens callers send"}));
                json!({"Authorizers": {"Cognito": {"UserPoolArn": reference("UserPoolArn")}},
                       "DefaultAuthorizer": "Cognito", "AddDefaultAuthorizerToCorsPreflight": false})
            }
        };
        api["Properties"]["Auth"] = authorizer;
    }
    // Every path to the one function; the API's own description, health
    // and docs stay public even behind an authorizer.
    let mut events = Map::new();
    let mut event = |name: &str, path: &str, method: &str, public: bool| {
        let mut props =
            json!({api_ref_key: reference(api_resource), "Path": path, "Method": method});
        if public && gateway {
            props["Auth"] = json!({"Authorizer": "NONE"});
        }
        events.insert(
            name.to_owned(),
            json!({"Type": event_type, "Properties": props}),
        );
    };
    event("Root", "/", "ANY", false);
    event("Everything", "/{proxy+}", "ANY", false);
    if gateway {
        event("Health", "/health", "GET", true);
        event("OpenApi", "/openapi.json", "GET", true);
        event("Docs", "/docs", "GET", true);
        event("DocsAssets", "/docs/{asset+}", "GET", true);
    }
    properties["Events"] = Json::Object(events);

    let url = match options.api {
        ApiKind::Http => {
            "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"
        }
        ApiKind::Rest => {
            "https://${RestApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}"
        }
    };
    let template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": format!("{}: a REST backend served by Anteroom on AWS Lambda (generated by `anteroom deploy sam`)", model.name),
        "Parameters": Json::Object(parameters),
        "Conditions": {"SqliteInTmp": {"Fn::Equals": [
            {"Fn::Select": [0, {"Fn::Split": [":", reference("DatabaseUrl")]}]}, "sqlite"]}},
        "Resources": {
            api_resource: api,
            "Function": {"Type": "AWS::Serverless::Function", "Properties": properties},
        },
        "Outputs": {
            "ApiUrl": {"Description": "The API's base URL", "Value": {"Fn::Sub": url}},
            "FunctionName": {"Value": reference("Function")},
        },
    });
    let mut out = String::from(
        "# Generated by `anteroom deploy sam`. Build the function with\n\
         # `cargo lambda build --release --arm64` (or --x86-64), copy\n\
         # target/lambda/anteroom/bootstrap next to the schema in the code\n\
         # directory, then `sam deploy --guided`. See docs/lambda.md.\n",
    );
    yaml(&mut out, &template, 0);
    out
}

/// A scalar as YAML: strings double-quoted (JSON's escapes are YAML's).
fn scalar(value: &Json) -> String {
    match value {
        Json::String(s) => Json::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

/// Block-style YAML for a JSON value, indented by `indent` spaces.
fn yaml(out: &mut String, value: &Json, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Json::Object(map) => {
            for (key, v) in map {
                let key = if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    key.clone()
                } else {
                    scalar(&Json::String(key.clone()))
                };
                match v {
                    Json::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml(out, v, indent + 2);
                    }
                    Json::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml(out, v, indent + 2);
                    }
                    Json::Object(_) => {
                        let _ = writeln!(out, "{pad}{key}: {{}}");
                    }
                    Json::Array(_) => {
                        let _ = writeln!(out, "{pad}{key}: []");
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{key}: {}", scalar(v));
                    }
                }
            }
        }
        Json::Array(items) => {
            for item in items {
                match item {
                    Json::Object(m) if !m.is_empty() => {
                        // The first key on the dash's line, the rest under it.
                        let mut nested = String::new();
                        yaml(&mut nested, item, indent + 2);
                        let _ = write!(out, "{pad}- {}", &nested[indent + 2..]);
                    }
                    Json::Array(a) if !a.is_empty() => {
                        let _ = writeln!(out, "{pad}-");
                        yaml(out, item, indent + 2);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}- {}", scalar(item));
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(out, "{pad}{}", scalar(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_become_parameter_names() {
        assert_eq!(parameter_name("APP_TOKEN"), "AppToken");
        assert_eq!(parameter_name("ADVISOR_JWT_SECRET"), "AdvisorJwtSecret");
    }

    #[test]
    fn nested_values_print_as_block_yaml() {
        let mut out = String::new();
        yaml(
            &mut out,
            &json!({"A": {"B": [1, {"C": "x: y", "D": []}], "E": "$ref"}}),
            0,
        );
        assert_eq!(
            out,
            "A:\n  B:\n    - 1\n    - C: \"x: y\"\n      D: []\n  E: \"$ref\"\n"
        );
    }
}
