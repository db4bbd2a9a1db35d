//! Taking in applications (one at a time or a CSV batch) and reviewing them.

use hpki_events::vocabulary::{
    ApplicationReceived, ApplicationRejected, BatchRow, Channel, DocumentsChecked, PhotoAttached,
    PhotoRef, Source,
};
use hpki_events::{Actor, Event};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::state::{Status, Subscriber};
use super::{Office, TRIES, busy, subscriber_stream, to};
use crate::batch::{self, RowError};
use crate::intake::{self, ApplicationForm, ValidApplication};
use crate::problem::{Detail, Message, OfficeError, Problem};

/// What a new application was given.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Submitted {
    pub application_id: Uuid,
    pub subscriber_id: String,
    pub status: String,
}

/// What to do with a file that has bad rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    /// Import nothing and report every bad row (the default).
    AllOrNothing,
    /// Import the good rows and report the bad ones.
    GoodRows,
}

/// The outcome of a CSV import.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ImportReport {
    pub file_sha256: String,
    pub encoding: String,
    /// Data rows in the file (blank rows not counted).
    pub rows: usize,
    /// Applications this import created.
    pub imported: usize,
    /// Rows an earlier import of the same file already created.
    pub already_imported: usize,
    /// Every bad row, with line and column.
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<RowError>,
}

/// Progress of a long import: rows done of rows in all.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

impl Office {
    /// Takes in one application (from the web form or keyed in by staff from paper).
    pub async fn submit(
        &self,
        form: &ApplicationForm,
        photo: Option<&[u8]>,
        channel: Channel,
        actor: &Actor,
    ) -> Result<Submitted, OfficeError> {
        let valid =
            intake::validate(form, &self.authorities(), self.today()).map_err(|errors| {
                invalid(
                    errors
                        .into_iter()
                        .map(|e| detail(None, None, e.field, e.code, e.ja, e.en))
                        .collect(),
                )
            })?;
        let stream = subscriber_stream(&valid.authority, &valid.registry_number);
        let source = Source {
            channel,
            batch: None,
        };
        let mut kept: Option<PhotoRef> = None;
        for _ in 0..TRIES {
            let (version, subscriber) = self.subscriber(&stream).await?;
            if let Some(open) = subscriber.open_application() {
                return Err(open_application(open.received.application_id).into());
            }
            // Stored once the application is not refused, so that a refused one leaves no
            // one's photo behind.
            if let (Some(bytes), None) = (photo, &kept) {
                kept = Some(self.keep_photo(bytes).await?);
            }
            let received = self.received(&valid, kept.clone(), source.clone());
            let submitted = Submitted {
                application_id: received.application_id,
                subscriber_id: received.subscriber_id.clone(),
                status: Status::Received.as_str().into(),
            };
            let append = vec![to(&stream, version, vec![received.into()])];
            if self.append(append, actor).await?.is_ok() {
                return Ok(submitted);
            }
        }
        Err(busy())
    }

    fn received(
        &self,
        valid: &ValidApplication,
        photo: Option<PhotoRef>,
        source: Source,
    ) -> ApplicationReceived {
        let application_id = Uuid::now_v7();
        let birth_date = valid.birth_date.to_string();
        ApplicationReceived {
            application_id,
            authority: valid.authority.clone(),
            registry_number: valid.registry_number.clone(),
            subscriber_id: valid.subscriber_id.clone(),
            name_kanji: valid.name_kanji.clone(),
            name_kana: valid.name_kana.clone(),
            name_romaji: valid.name_romaji.clone(),
            birth_date: self
                .kek()
                .seal(&birth_date_context(application_id), birth_date.as_bytes()),
            profession: valid.profession.clone(),
            email: valid.email.clone(),
            postal_code: valid.postal_code.clone(),
            address: valid.address.clone(),
            delivery: valid.delivery.clone(),
            photo,
            source,
        }
    }

    /// The birth date of an application, opened from its sealed form: for the QR password
    /// check and for staff comparing documents, nothing else.
    pub fn birth_date(&self, received: &ApplicationReceived) -> Result<String, OfficeError> {
        let plain = self
            .kek()
            .open(
                &birth_date_context(received.application_id),
                &received.birth_date,
            )
            .map_err(|e| OfficeError::Internal(e.into()))?;
        String::from_utf8(plain).map_err(|e| OfficeError::Internal(e.into()))
    }

    /// Whether `digits` (`YYYYMMDD`) is the application's birth date, compared in constant
    /// time: the QR password check and the subscriber's reissue form.
    pub(super) fn birth_date_is(
        &self,
        received: &ApplicationReceived,
        digits: &str,
    ) -> Result<bool, OfficeError> {
        let birth = self.birth_date(received)?.replace('-', "");
        Ok(birth.len() == digits.len() && openssl::memcmp::eq(birth.as_bytes(), digits.as_bytes()))
    }

    /// Checks and stores a photo, returning what the log will say of it.
    async fn keep_photo(&self, bytes: &[u8]) -> Result<PhotoRef, OfficeError> {
        let max = self.inner.photo_max_bytes;
        if bytes.len() > max {
            return Err(Problem::new(
                413,
                "photo_too_large",
                format!("顔写真は{max}バイト以内です（{}バイト）", bytes.len()),
                format!("the photo is {} bytes; at most {max}", bytes.len()),
            )
            .field("photo")
            .into());
        }
        let Some(media_type) = intake::photo_media_type(bytes) else {
            return Err(Problem::new(
                422,
                "bad_photo",
                "顔写真は JPEG か PNG の画像にしてください",
                "the photo must be a JPEG or PNG image",
            )
            .field("photo")
            .into());
        };
        if let Err(why) = crate::pdf::photo_readable(media_type, bytes) {
            return Err(Problem::new(
                422,
                "bad_photo",
                format!("顔写真の画像を読めません（{why}）"),
                format!("the photo cannot be read as an image ({why})"),
            )
            .field("photo")
            .into());
        }
        let sha256 = hex::encode(openssl::sha::sha256(bytes));
        self.store().put_photo(&sha256, media_type, bytes).await?;
        Ok(PhotoRef {
            sha256,
            media_type: media_type.into(),
            bytes: bytes.len() as u64,
        })
    }

    /// Attaches (or replaces) the photo of an open application.
    pub async fn attach_photo(
        &self,
        application_id: Uuid,
        bytes: &[u8],
        actor: &Actor,
    ) -> Result<PhotoRef, OfficeError> {
        // An unknown or closed application is refused before the photo is stored.
        let stream = self.application_stream(application_id).await?;
        open_for_review(&self.subscriber(&stream).await?.1, application_id)?;
        let photo = self.keep_photo(bytes).await?;
        self.review_step(application_id, actor, |subscriber| {
            open_for_review(subscriber, application_id)?;
            Ok(PhotoAttached {
                application_id,
                photo: photo.clone(),
            }
            .into())
        })
        .await?;
        Ok(photo)
    }

    /// Records that staff checked the documents. An application needs its photo first.
    pub async fn check_documents(
        &self,
        application_id: Uuid,
        actor: &Actor,
    ) -> Result<(), OfficeError> {
        self.review_step(application_id, actor, |subscriber| {
            let application = open_for_review(subscriber, application_id)?;
            if application.status == Status::DocumentsChecked {
                return Err(wrong_status(application.status, "documents_checked"));
            }
            if application.photo.is_none() {
                return Err(Problem::new(
                    409,
                    "photo_missing",
                    "顔写真がまだありません。写真を添付してから書類確認をしてください",
                    "the application has no photo yet; attach it before checking the documents",
                )
                .field("photo")
                .into());
            }
            Ok(DocumentsChecked { application_id }.into())
        })
        .await
    }

    /// Rejects an open application with a reason the applicant will be told.
    pub async fn reject(
        &self,
        application_id: Uuid,
        reason: &str,
        actor: &Actor,
    ) -> Result<(), OfficeError> {
        let reason = reason_text(reason)?;
        self.review_step(application_id, actor, |subscriber| {
            open_for_review(subscriber, application_id)?;
            Ok(ApplicationRejected {
                application_id,
                reason: reason.clone(),
            }
            .into())
        })
        .await
    }

    /// Appends the one event `decide` makes of the application's subscriber as it stands;
    /// when another command changed the subscriber first, decides again on the new state.
    async fn review_step(
        &self,
        application_id: Uuid,
        actor: &Actor,
        decide: impl Fn(&Subscriber) -> Result<Event, OfficeError>,
    ) -> Result<(), OfficeError> {
        let stream = self.application_stream(application_id).await?;
        self.decide_on(&stream, actor, |subscriber| {
            Ok((vec![decide(subscriber)?], ()))
        })
        .await
    }

    /// The subscriber stream an application belongs to, from the `applications` read model
    /// (brought up to date first when the id is not there yet).
    pub async fn application_stream(&self, application_id: Uuid) -> Result<String, OfficeError> {
        let key = application_id.to_string();
        for attempt in 0..2 {
            if let Some(doc) = self.store().doc("applications", &key).await? {
                if let Some(stream) = doc.body["subscriber"].as_str() {
                    return Ok(stream.to_owned());
                }
            }
            if attempt == 0 {
                crate::projection_runner::catch_up(self.store(), &hpki_projections::Applications)
                    .await?;
            }
        }
        Err(Problem::not_found("申請", "the application").into())
    }

    /// Imports a CSV batch. Every row is checked first, against the file and the log; with
    /// [`ImportMode::AllOrNothing`] one bad row means nothing is written (the error lists every
    /// bad row). The good rows are written in one atomic append. A row an earlier import of
    /// the same file (same bytes) created is counted, not created again.
    pub async fn import(
        &self,
        bytes: &[u8],
        mode: ImportMode,
        actor: &Actor,
        progress: Progress<'_>,
    ) -> Result<ImportReport, OfficeError> {
        let file = batch::parse(bytes).map_err(|errors| {
            Problem::new(
                422,
                "unreadable_file",
                "CSV ファイルを読めません",
                "the CSV file cannot be read",
            )
            .details(errors.into_iter().map(row_detail).collect())
        })?;
        let (good, errors) = batch::validate_rows(&file, &self.authorities(), self.today());
        let total = file.rows.len() as u64;

        for _ in 0..TRIES {
            let mut errors = errors.clone();
            let streams: Vec<String> = good
                .iter()
                .map(|(_, v)| subscriber_stream(&v.authority, &v.registry_number))
                .collect();
            let versions = self.store().stream_versions(&streams).await?;
            let mut appends = Vec::new();
            let mut already = 0;
            for (done, ((line, valid), stream)) in good.iter().zip(&streams).enumerate() {
                if done % 500 == 0 {
                    progress(done as u64, total);
                }
                let version = versions.get(stream).copied().unwrap_or(0);
                let batch = BatchRow {
                    file_sha256: file.sha256.clone(),
                    line: *line,
                };
                if version > 0 {
                    let (_, subscriber) = self.subscriber(stream).await?;
                    let from_this_row = subscriber
                        .applications
                        .iter()
                        .any(|a| a.received.source.batch.as_ref() == Some(&batch));
                    if from_this_row {
                        already += 1;
                        continue;
                    }
                    if let Some(open) = subscriber.open_application() {
                        errors.push(RowError {
                            line: *line,
                            column: file.column_of("registry_number").unwrap_or_default(),
                            field: "registry_number",
                            code: "open_application",
                            ja: format!(
                                "{line}行目: この登録番号には審査中の申請（{}）があります",
                                open.received.application_id
                            ),
                            en: format!(
                                "line {line}: this registry number already has an open application ({})",
                                open.received.application_id
                            ),
                        });
                        continue;
                    }
                }
                let source = Source {
                    channel: Channel::Csv,
                    batch: Some(batch),
                };
                let received: Event = self.received(valid, None, source).into();
                appends.push(to(stream, version, vec![received]));
            }
            errors.sort_by_key(|e| e.line);
            if !errors.is_empty() && mode == ImportMode::AllOrNothing {
                let count = errors.len();
                return Err(Problem::new(
                    422,
                    "invalid_rows",
                    format!("{count}件の誤りがあるため、何も取り込んでいません"),
                    format!("{count} problems found; nothing was imported"),
                )
                .details(errors.into_iter().map(row_detail).collect())
                .into());
            }
            let imported = appends.len();
            if !appends.is_empty() && self.append(appends, actor).await?.is_err() {
                continue;
            }
            progress(total, total);
            return Ok(ImportReport {
                file_sha256: file.sha256.clone(),
                encoding: file.encoding.into(),
                rows: file.rows.len(),
                imported,
                already_imported: already,
                errors,
            });
        }
        Err(busy())
    }
}

fn birth_date_context(application_id: Uuid) -> String {
    format!("birth-date/{application_id}")
}

/// The application, when it is still waiting for a decision.
fn open_for_review(
    subscriber: &Subscriber,
    application_id: Uuid,
) -> Result<&super::state::Application, OfficeError> {
    let application = subscriber
        .application(application_id)
        .ok_or_else(|| Problem::not_found("申請", "the application"))?;
    if !application.status.is_open() {
        return Err(wrong_status(application.status, "an open application"));
    }
    Ok(application)
}

pub(super) fn wrong_status(status: Status, wanted: &str) -> OfficeError {
    Problem::new(
        409,
        "wrong_status",
        format!(
            "この申請は現在「{}」のため、この操作はできません",
            status_ja(status)
        ),
        format!(
            "the application is {}; this needs {wanted}",
            status.as_str()
        ),
    )
    .into()
}

fn status_ja(status: Status) -> &'static str {
    match status {
        Status::Received => "受付済み",
        Status::DocumentsChecked => "書類確認済み",
        Status::Approved => "承認済み",
        Status::Rejected => "却下",
    }
}

fn open_application(existing: Uuid) -> Problem {
    Problem::new(
        409,
        "open_application",
        format!(
            "この方には審査中の申請（{existing}）があります。同じ認証局への申請は一度に一件です"
        ),
        format!("this person already has an open application ({existing}) with this authority"),
    )
    .field("registry_number")
}

fn invalid(details: Vec<Detail>) -> OfficeError {
    Problem::new(
        422,
        "invalid_application",
        "申請の内容に誤りがあります",
        "the application has errors",
    )
    .details(details)
    .into()
}

fn detail(
    line: Option<u64>,
    column: Option<String>,
    field: &str,
    code: &str,
    ja: String,
    en: String,
) -> Detail {
    Detail {
        line,
        column,
        field: field.into(),
        code: code.into(),
        message: Message { ja, en },
    }
}

pub(crate) fn row_detail(e: RowError) -> Detail {
    let column = (!e.column.is_empty()).then_some(e.column);
    detail(Some(e.line), column, e.field, e.code, e.ja, e.en)
}

/// A decision's reason, told to the person concerned: 1 to 500 characters.
pub(super) fn reason_text(reason: &str) -> Result<String, OfficeError> {
    let reason = reason.trim();
    let length = reason.chars().count();
    if length == 0 || length > 500 {
        return Err(Problem::new(
            422,
            "bad_reason",
            "理由を500文字以内で入力してください（ご本人に伝えられます）",
            "give a reason of 1 to 500 characters (the person concerned is told it)",
        )
        .field("reason")
        .into());
    }
    Ok(reason.to_owned())
}
