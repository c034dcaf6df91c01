//! Schema migrations. The model is reduced to a [`Snapshot`] of what the
//! database holds (tables, column types, nullability, references, indexes);
//! the last applied snapshot is stored in `_anteroom_schema`. [`diff`] turns
//! old → new into additive [`Step`]s or refuses, saying what would be lost.
//! Dialects only render steps as DDL.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::schema::{AppModel, ColumnRole, FieldType, IdKind, OnDelete, Scalar};

/// The physical schema the database should have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    /// Tables in creation order (referenced tables first where possible).
    pub tables: IndexMap<String, TableSpec>,
}

/// One table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSpec {
    /// Name of the primary key column.
    pub id: String,
    /// `uuid`, `integer` or `key`.
    pub id_kind: String,
    /// Columns in order (the id first).
    pub columns: IndexMap<String, ColumnSpec>,
    /// Indexes, by name.
    pub indexes: IndexMap<String, IndexSpec>,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// Storage scalar.
    pub scalar: Scalar,
    /// Declared maximum length of strings (MySQL sizes VARCHARs by it).
    pub max_length: Option<usize>,
    /// Long text (`text` fields): unbounded column types.
    #[serde(default)]
    pub long: bool,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Value existing rows get when the column is added.
    pub default: Option<Json>,
    /// Foreign key target table and action.
    pub references: Option<(String, OnDelete)>,
}

/// One index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexSpec {
    /// Indexed columns, in order.
    pub columns: Vec<String>,
    /// Unique index.
    pub unique: bool,
}

/// One additive change.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create a table with its columns, keys and references (indexes follow as steps).
    CreateTable {
        /// Table name.
        table: String,
        /// Its spec.
        spec: TableSpec,
    },
    /// Add a nullable or defaulted column.
    AddColumn {
        /// Table name.
        table: String,
        /// Column name.
        column: String,
        /// Its spec.
        spec: ColumnSpec,
    },
    /// Create an index.
    CreateIndex {
        /// Table name.
        table: String,
        /// Index name.
        name: String,
        /// Its spec.
        spec: IndexSpec,
    },
    /// Drop an index (no data is lost).
    DropIndex {
        /// Table name.
        table: String,
        /// Index name.
        name: String,
    },
}

/// The result of a migration (or a dry run).
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// DDL statements, in order.
    pub statements: Vec<String>,
    /// Whether they were applied.
    pub applied: bool,
    /// The schema version after the run.
    pub version: i64,
}

/// Why a migration did not run.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The change would lose data or cannot be done automatically.
    #[error("refusing to migrate:\n{}", .0.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<String>),
    /// The database failed while migrating.
    #[error("migration failed: {0}")]
    Database(String),
}

/// The name of the foreign key on `table.column`.
pub fn fk_name(table: &str, column: &str) -> String {
    ix_name("fk", table, &[column.to_owned()])
}

fn ix_name(prefix: &str, table: &str, columns: &[String]) -> String {
    let name = format!("{prefix}_{table}_{}", columns.join("_"));
    if name.len() <= 60 {
        return name;
    }
    // Keep names within every dialect's identifier limit, still unique per column set.
    let mut hash: u32 = 2166136261;
    for b in name.bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(16777619);
    }
    format!("{}_{hash:08x}", &name[..51])
}

/// The snapshot a model needs.
pub fn snapshot(model: &AppModel) -> Snapshot {
    let mut tables = IndexMap::new();
    for resource in model.resources.values() {
        let mut columns = IndexMap::new();
        let mut indexes = IndexMap::new();
        for column in &resource.columns {
            let references = match &column.ty {
                FieldType::Ref(r) => Some((r.to.clone(), r.on_delete)),
                _ => None,
            };
            let max_length = match (&column.ty, column.role) {
                (FieldType::String, _) | (FieldType::Ref(_), _) => {
                    column.constraints.max_length.or(match &column.ty {
                        FieldType::Ref(r) => match r.key {
                            IdKind::Key { max_length } => Some(max_length),
                            _ => None,
                        },
                        _ => None,
                    })
                }
                _ => None,
            };
            columns.insert(
                column.name.clone(),
                ColumnSpec {
                    scalar: column.scalar(),
                    max_length,
                    long: column.ty == FieldType::Text,
                    nullable: column.nullable(),
                    default: column.constraints.default.clone(),
                    references,
                },
            );
            if column.role == ColumnRole::Id {
                continue;
            }
            let cols = vec![column.name.clone()];
            if column.constraints.unique {
                indexes.insert(
                    ix_name("uq", &resource.name, &cols),
                    IndexSpec {
                        columns: cols,
                        unique: true,
                    },
                );
            } else if column.constraints.index {
                indexes.insert(
                    ix_name("ix", &resource.name, &cols),
                    IndexSpec {
                        columns: cols,
                        unique: false,
                    },
                );
            }
        }
        for cols in &resource.indexes {
            indexes.insert(
                ix_name("ix", &resource.name, cols),
                IndexSpec {
                    columns: cols.clone(),
                    unique: false,
                },
            );
        }
        tables.insert(
            resource.name.clone(),
            TableSpec {
                id: resource.id_column().name.clone(),
                id_kind: match resource.id_kind {
                    IdKind::Uuid => "uuid",
                    IdKind::Integer => "integer",
                    IdKind::Key { .. } => "key",
                }
                .to_owned(),
                columns,
                indexes,
            },
        );
    }
    Snapshot {
        tables: order_by_references(tables),
    }
}

/// Referenced tables first, so client-server databases can create foreign keys.
fn order_by_references(mut tables: IndexMap<String, TableSpec>) -> IndexMap<String, TableSpec> {
    let mut ordered = IndexMap::new();
    while !tables.is_empty() {
        let ready = tables
            .iter()
            .position(|(name, spec)| {
                spec.columns.values().all(|c| match &c.references {
                    Some((to, _)) => to == name || ordered.contains_key(to),
                    None => true,
                })
            })
            .unwrap_or(0);
        let (name, spec) = tables.shift_remove_index(ready).expect("index in range");
        ordered.insert(name, spec);
    }
    ordered
}

/// The steps from `old` to `new`, or every reason it cannot be done safely.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Result<Vec<Step>, Vec<String>> {
    let mut steps = Vec::new();
    let mut refusals = Vec::new();
    for name in old.tables.keys() {
        if !new.tables.contains_key(name) {
            refusals.push(format!(
                "resource \"{name}\" was removed: dropping its table would delete every row in it"
            ));
        }
    }
    for (name, spec) in &new.tables {
        let Some(before) = old.tables.get(name) else {
            steps.push(Step::CreateTable {
                table: name.clone(),
                spec: spec.clone(),
            });
            for (ix, ispec) in &spec.indexes {
                steps.push(Step::CreateIndex {
                    table: name.clone(),
                    name: ix.clone(),
                    spec: ispec.clone(),
                });
            }
            continue;
        };
        if before.id != spec.id || before.id_kind != spec.id_kind {
            refusals.push(format!(
                "resource \"{name}\" changed its id from {} {} to {} {}: every stored key would change",
                before.id_kind, before.id, spec.id_kind, spec.id
            ));
            continue;
        }
        for column in before.columns.keys() {
            if !spec.columns.contains_key(column) {
                refusals.push(format!(
                    "field \"{name}.{column}\" was removed: dropping the column would delete its values"
                ));
            }
        }
        for (column, cspec) in &spec.columns {
            match before.columns.get(column) {
                None => {
                    if !cspec.nullable && cspec.default.is_none() {
                        refusals.push(format!(
                            "field \"{name}.{column}\" is new and required without a default: existing rows would have no value (give it a default or make it optional)"
                        ));
                    } else {
                        steps.push(Step::AddColumn {
                            table: name.clone(),
                            column: column.clone(),
                            spec: cspec.clone(),
                        });
                    }
                }
                Some(prev) => {
                    if prev.scalar != cspec.scalar {
                        refusals.push(format!(
                            "field \"{name}.{column}\" changed type from {:?} to {:?}: stored values would have to be converted or lost",
                            prev.scalar, cspec.scalar
                        ));
                    }
                    if prev.nullable != cspec.nullable {
                        refusals.push(format!(
                            "field \"{name}.{column}\" changed `required`: this needs a manual migration"
                        ));
                    }
                    if prev.references != cspec.references {
                        refusals.push(format!(
                            "field \"{name}.{column}\" changed its reference: this needs a manual migration"
                        ));
                    }
                }
            }
        }
        for (ix, ispec) in &before.indexes {
            if spec.indexes.get(ix) != Some(ispec) {
                steps.push(Step::DropIndex {
                    table: name.clone(),
                    name: ix.clone(),
                });
            }
        }
        for (ix, ispec) in &spec.indexes {
            if before.indexes.get(ix) != Some(ispec) {
                steps.push(Step::CreateIndex {
                    table: name.clone(),
                    name: ix.clone(),
                    spec: ispec.clone(),
                });
            }
        }
    }
    if refusals.is_empty() {
        Ok(steps)
    } else {
        Err(refusals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::load_str;

    fn snap(fields: &str) -> Snapshot {
        snapshot(&load_str(&format!("[app]\nname='t'\n[resources.notes]\n{fields}")).unwrap())
    }

    #[test]
    fn a_new_database_gets_a_table_and_its_indexes() {
        let steps = diff(
            &Snapshot::default(),
            &snap("fields.a={type='string',unique=true}\n"),
        )
        .unwrap();
        assert!(matches!(&steps[0], Step::CreateTable { table, .. } if table == "notes"));
        assert!(
            steps
                .iter()
                .any(|s| matches!(s, Step::CreateIndex { spec, .. } if spec.unique))
        );
    }

    #[test]
    fn an_optional_field_is_added_in_place() {
        let old = snap("fields.a={type='string'}\n");
        let new = snap("fields.a={type='string'}\nfields.b={type='integer'}\n");
        let steps = diff(&old, &new).unwrap();
        assert_eq!(steps.len(), 1);
        assert!(matches!(&steps[0], Step::AddColumn { column, .. } if column == "b"));
    }

    #[test]
    fn removing_a_field_is_refused_naming_it() {
        let old = snap("fields.a={type='string'}\nfields.b={type='integer'}\n");
        let new = snap("fields.a={type='string'}\n");
        let refusals = diff(&old, &new).unwrap_err();
        assert!(refusals[0].contains("notes.b"), "{refusals:?}");
    }

    #[test]
    fn changing_a_type_is_refused() {
        let old = snap("fields.a={type='string'}\n");
        let new = snap("fields.a={type='integer'}\n");
        assert!(diff(&old, &new).unwrap_err()[0].contains("changed type"));
    }

    #[test]
    fn a_required_field_without_default_is_refused_but_with_one_is_added() {
        let old = snap("fields.a={type='string'}\n");
        assert!(
            diff(
                &old,
                &snap("fields.a={type='string'}\nfields.b={type='integer',required=true}\n")
            )
            .is_err()
        );
        assert!(
            diff(
                &old,
                &snap(
                    "fields.a={type='string'}\nfields.b={type='integer',required=true,default=1}\n"
                )
            )
            .is_ok()
        );
    }

    #[test]
    fn an_unchanged_schema_needs_no_steps() {
        let s = snap("fields.a={type='string',unique=true}\n");
        assert_eq!(diff(&s, &s).unwrap(), vec![]);
    }
}
