//! The watched tables as `GetCatalog` lists them: every column with its PostgreSQL type and the
//! `Value` kind it arrives as, the primary key, and whether a permission row filter narrows
//! what the caller sees. Reads the database's catalog; watches nothing.

use super::{schema, values, Changefeed};
use crate::auth::permissions::TableAccess;
use crate::protocol::catalog::{CatalogColumn, CatalogTable};
use crate::protocol::Failure;

impl Changefeed {
    /// The watched tables `authorize` lets the caller subscribe to (see
    /// [`TableSubscribe::authorize`]), by name, for the catalog; `SOURCE_UNAVAILABLE` when the
    /// database cannot be asked.
    pub async fn catalog(
        &self,
        authorize: &(dyn Fn(&str, &str) -> Result<TableAccess, Failure> + Sync),
    ) -> Result<Vec<CatalogTable>, Failure> {
        let columns = schema::watched_columns(&self.shared.pool)
            .await
            .map_err(|err| schema::unavailable(&err))?;
        let mut tables: Vec<CatalogTable> = Vec::new();
        // The table the previous column belonged to, and whether the caller may see it.
        let mut current: Option<(String, bool)> = None;
        for column in columns {
            if current
                .as_ref()
                .is_none_or(|(name, _)| *name != column.table)
            {
                let access = authorize(&column.schema, &column.relname).ok();
                if let Some(access) = &access {
                    tables.push(CatalogTable {
                        table: column.table.clone(),
                        columns: Vec::new(),
                        primary_key: column.key_columns.clone(),
                        row_filtered: matches!(access, TableAccess::Rows(_)),
                    });
                }
                current = Some((column.table.clone(), access.is_some()));
            }
            let (Some((_, true)), Some(table)) = (&current, tables.last_mut()) else {
                continue;
            };
            let kind =
                values::ColumnType::from_regtype(&column.regtype).value_kind(&column.regtype);
            table.columns.push(CatalogColumn {
                name: column.name,
                pg_type: column.pg_type,
                kind,
            });
        }
        Ok(tables)
    }
}
