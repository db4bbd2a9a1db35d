//! What goes wrong, said the same way everywhere: a stable code, the field (and line) it
//! concerns, and a message in Japanese and English. The API turns a [`Problem`] into its JSON
//! error body and status; the CLI prints it.

use serde::Serialize;
use utoipa::ToSchema;

/// A message in both languages; Japanese first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Message {
    pub ja: String,
    pub en: String,
}

/// One specific thing wrong: a field of a form, or a cell of an uploaded file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Detail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub field: String,
    pub code: String,
    pub message: Message,
}

/// The error body of every API call: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// The HTTP status this problem is answered with.
    #[serde(skip)]
    pub status: u16,
    /// Stable and machine-readable, e.g. `invalid_application`, `not_found`, `conflict`.
    pub code: String,
    /// The field concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: Message,
    /// Every individual problem, for forms and files with several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Detail>,
}

impl Problem {
    pub fn new(status: u16, code: &str, ja: impl Into<String>, en: impl Into<String>) -> Problem {
        Problem {
            status,
            code: code.to_owned(),
            field: None,
            message: Message {
                ja: ja.into(),
                en: en.into(),
            },
            details: Vec::new(),
        }
    }

    pub fn field(mut self, field: &str) -> Problem {
        self.field = Some(field.to_owned());
        self
    }

    pub fn details(mut self, details: Vec<Detail>) -> Problem {
        self.details = details;
        self
    }

    /// A fault of ours, already logged where it happened: all the client is told.
    pub fn internal() -> Problem {
        Problem::new(
            500,
            "internal",
            "サーバーの内部エラーです。記録しました",
            "an internal error occurred; it has been logged",
        )
    }

    pub fn not_found(what_ja: &str, what_en: &str) -> Problem {
        Problem::new(
            404,
            "not_found",
            format!("{what_ja}が見つかりません"),
            format!("{what_en} was not found"),
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} / {}", self.message.ja, self.message.en)?;
        for d in &self.details {
            write!(f, "\n  ")?;
            if let Some(line) = d.line {
                write!(f, "line {line}: ")?;
            }
            if let Some(column) = &d.column {
                write!(f, "[{column}] ")?;
            }
            write!(f, "{} / {}", d.message.ja, d.message.en)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

/// A command's failure: something the caller can fix, or a fault of ours (logged, never
/// shown in detail).
#[derive(Debug, thiserror::Error)]
pub enum OfficeError {
    #[error("{0}")]
    Problem(Problem),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<Problem> for OfficeError {
    fn from(problem: Problem) -> OfficeError {
        OfficeError::Problem(problem)
    }
}

impl From<crate::store::StoreError> for OfficeError {
    fn from(error: crate::store::StoreError) -> OfficeError {
        OfficeError::Internal(error.into())
    }
}
