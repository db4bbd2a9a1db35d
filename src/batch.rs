//! CSV batches of applications from prefectural associations, as Excel exports them: UTF-8
//! with or without a BOM, or Shift_JIS (CP932). Pure: bytes in, forms or every problem out,
//! each named by line and column header.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::config::Authority;
use crate::intake::{ApplicationForm, ValidApplication, validate};

/// A file read into forms.
pub struct ParsedFile {
    /// `UTF-8`, `UTF-8 (BOM)` or `Shift_JIS (CP932)`.
    pub encoding: &'static str,
    /// SHA-256 of the bytes as sent (hex): names the file, so a re-import is recognised.
    pub sha256: String,
    pub rows: Vec<ParsedRow>,
    /// Rows that could not become a form (a wrong number of fields).
    pub problems: Vec<RowError>,
    /// Each form field's column header as written in this file.
    headers: HashMap<&'static str, String>,
}

pub struct ParsedRow {
    /// The line the record starts on (the header is line 1).
    pub line: u64,
    pub form: ApplicationForm,
}

/// One problem with one row (or with the file, at line 1 or the line it was found).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub line: u64,
    /// The column's header as written in the file; empty for the row or file as a whole.
    pub column: String,
    pub field: &'static str,
    pub code: &'static str,
    pub ja: String,
    pub en: String,
}

/// Every form field with the headers it may go by, Japanese and English.
const COLUMNS: &[(&str, &[&str])] = &[
    ("authority", &["認証局", "authority"]),
    ("name_kanji", &["氏名", "氏名(漢字)", "name_kanji"]),
    ("name_kana", &["氏名(カナ)", "フリガナ", "name_kana"]),
    ("name_romaji", &["氏名(ローマ字)", "name_romaji"]),
    ("birth_date", &["生年月日", "birth_date"]),
    ("profession", &["職種", "profession"]),
    (
        "registry_number",
        &[
            "登録番号",
            "医籍登録番号",
            "薬剤師名簿登録番号",
            "registry_number",
        ],
    ),
    ("email", &["メールアドレス", "email"]),
    ("postal_code", &["郵便番号", "postal_code"]),
    ("address", &["住所", "address"]),
    ("delivery", &["送付先", "delivery"]),
    ("delivery_office", &["送付先団体名", "delivery_office"]),
];

const OPTIONAL: &[&str] = &["delivery_office"];

pub(crate) fn file_error(
    line: u64,
    column: &str,
    code: &'static str,
    ja: String,
    en: String,
) -> RowError {
    RowError {
        line,
        column: column.to_owned(),
        field: "file",
        code,
        ja,
        en,
    }
}

/// The text of a file, with the encoding it was in.
pub(crate) fn decode(bytes: &[u8]) -> Result<(std::borrow::Cow<'_, str>, &'static str), RowError> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(file_error(
            1,
            "",
            "bad_encoding",
            "UTF-16 のファイルは読めません。UTF-8 か Shift_JIS（CSV）で保存してください".into(),
            "UTF-16 files are not read; save as UTF-8 or Shift_JIS CSV".into(),
        ));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return std::str::from_utf8(rest)
            .map(|text| (text.into(), "UTF-8 (BOM)"))
            .map_err(|e| undecodable(rest, e.valid_up_to() + 3, "UTF-8"));
    }
    let utf8_valid_up_to = match std::str::from_utf8(bytes) {
        Ok(text) => return Ok((text.into(), "UTF-8")),
        Err(e) => e.valid_up_to(),
    };
    let mut decoder = encoding_rs::SHIFT_JIS.new_decoder_without_bom_handling();
    let mut text = String::with_capacity(
        decoder
            .max_utf8_buffer_length_without_replacement(bytes.len())
            .unwrap_or(bytes.len() * 3),
    );
    let (result, read) = decoder.decode_to_string_without_replacement(bytes, &mut text, true);
    match result {
        encoding_rs::DecoderResult::InputEmpty => Ok((text.into(), "Shift_JIS (CP932)")),
        encoding_rs::DecoderResult::Malformed(bad, extra) => {
            // Name the place where the likelier encoding (the one that read further) failed.
            let sjis_failed_at = read - bad as usize - extra as usize;
            Err(if utf8_valid_up_to >= sjis_failed_at {
                undecodable(bytes, utf8_valid_up_to, "UTF-8")
            } else {
                undecodable(bytes, sjis_failed_at, "Shift_JIS")
            })
        }
        encoding_rs::DecoderResult::OutputFull => unreachable!("the buffer holds the worst case"),
    }
}

fn undecodable(bytes: &[u8], offset: usize, tried: &str) -> RowError {
    let line = bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
        + 1;
    file_error(
        line,
        "",
        "bad_encoding",
        format!(
            "{line}行目（{offset}バイト目）に UTF-8 としても Shift_JIS としても読めない文字があります"
        ),
        format!(
            "line {line} (byte {offset}) is neither UTF-8 nor Shift_JIS (read as {tried}, it fails there)"
        ),
    )
}

/// Header text as compared: trimmed, full-width parentheses read as ASCII ones.
fn normalise(header: &str) -> String {
    header.trim().replace('（', "(").replace('）', ")")
}

/// Decodes and parses a file. Refused whole (every problem listed) when the encoding, the
/// header or the CSV itself is broken.
pub fn parse(bytes: &[u8]) -> Result<ParsedFile, Vec<RowError>> {
    let sha256 = hex::encode(openssl::sha::sha256(bytes));
    let (text, encoding) = decode(bytes).map_err(|e| vec![e])?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let header_row = reader.headers().map_err(|e| vec![csv_error(&e)])?.clone();

    let mut problems = Vec::new();
    let mut index: Vec<Option<&'static str>> = Vec::new();
    let mut headers: HashMap<&'static str, String> = HashMap::new();
    for written in header_row.iter() {
        let name = normalise(written);
        let field = COLUMNS
            .iter()
            .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(&name)))
            .map(|(field, _)| *field);
        match field {
            None if name.is_empty() => index.push(None),
            None => {
                problems.push(file_error(
                    1,
                    written,
                    "unknown_column",
                    format!("1行目: 列「{written}」は使えません"),
                    format!("line 1: column {written:?} is not known"),
                ));
                index.push(None);
            }
            Some(field) if headers.contains_key(field) => {
                problems.push(file_error(
                    1,
                    written,
                    "duplicate_column",
                    format!(
                        "1行目: 列「{written}」が「{}」と重複しています",
                        headers[field]
                    ),
                    format!("line 1: column {written:?} repeats {:?}", headers[field]),
                ));
                index.push(None);
            }
            Some(field) => {
                headers.insert(field, written.to_owned());
                index.push(Some(field));
            }
        }
    }
    for (field, names) in COLUMNS {
        if !headers.contains_key(field) && !OPTIONAL.contains(field) {
            problems.push(file_error(
                1,
                "",
                "missing_column",
                format!("1行目: 列「{}」がありません", names[0]),
                format!("line 1: column {:?} ({field}) is missing", names[0]),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let mut rows = Vec::new();
    let mut lines = LineCounter::new(text.as_bytes());
    for record in reader.records() {
        let record = record.map_err(|e| vec![csv_error(&e)])?;
        let line = lines.line_at(record.position().map_or(0, |p| p.byte() as usize));
        if record.iter().all(|cell| cell.trim().is_empty()) {
            continue;
        }
        if record.len() != header_row.len() {
            problems.push(RowError {
                line,
                column: String::new(),
                field: "row",
                code: "wrong_field_count",
                ja: format!(
                    "{line}行目: 列の数が{}です（見出しは{}列）",
                    record.len(),
                    header_row.len()
                ),
                en: format!(
                    "line {line}: {} fields where the header has {}",
                    record.len(),
                    header_row.len()
                ),
            });
            continue;
        }
        let mut form = ApplicationForm::default();
        for (cell, field) in record.iter().zip(&index) {
            let value = cell.to_owned();
            match field {
                Some("authority") => form.authority = value,
                Some("name_kanji") => form.name_kanji = value,
                Some("name_kana") => form.name_kana = value,
                Some("name_romaji") => form.name_romaji = value,
                Some("birth_date") => form.birth_date = value,
                Some("profession") => form.profession = value,
                Some("registry_number") => form.registry_number = value,
                Some("email") => form.email = value,
                Some("postal_code") => form.postal_code = value,
                Some("address") => form.address = value,
                Some("delivery") => form.delivery = value,
                Some("delivery_office") => {
                    form.delivery_office = (!value.trim().is_empty()).then_some(value)
                }
                _ => {}
            }
        }
        rows.push(ParsedRow { line, form });
    }
    Ok(ParsedFile {
        encoding,
        sha256,
        rows,
        problems,
        headers,
    })
}

/// Line numbers from byte offsets. The csv crate's own line count is one short after a CRLF
/// (it counts the `\n` of a record's CRLF as part of the next record), and Excel writes CRLF.
struct LineCounter<'a> {
    text: &'a [u8],
    offset: usize,
    line: u64,
}

impl LineCounter<'_> {
    fn new(text: &[u8]) -> LineCounter<'_> {
        LineCounter {
            text,
            offset: 0,
            line: 1,
        }
    }

    /// The line of the first character of the record starting at `offset` (line breaks at
    /// the offset belong to the previous record). Offsets must not go backwards.
    fn line_at(&mut self, mut offset: usize) -> u64 {
        while self
            .text
            .get(offset)
            .is_some_and(|&b| b == b'\r' || b == b'\n')
        {
            offset += 1;
        }
        let end = offset.min(self.text.len()).max(self.offset);
        self.line += self.text[self.offset..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count() as u64;
        self.offset = end;
        self.line
    }
}

fn csv_error(e: &csv::Error) -> RowError {
    let line = e.position().map_or(0, |p| p.line());
    file_error(
        line,
        "",
        "bad_csv",
        format!("{line}行目: CSV として読めません: {e}"),
        format!("line {line}: not valid CSV: {e}"),
    )
}

impl ParsedFile {
    /// The header `field` goes by in this file.
    pub fn column_of(&self, field: &str) -> Option<String> {
        self.headers.get(field).cloned()
    }
}

/// Validates every row, and refuses a second row for the same person (authority and
/// registry number) in one file. Returns the good rows and every problem, by line.
pub fn validate_rows(
    file: &ParsedFile,
    authorities: &BTreeMap<String, Authority>,
    today: time::Date,
) -> (Vec<(u64, ValidApplication)>, Vec<RowError>) {
    let mut good = Vec::new();
    let mut errors = file.problems.clone();
    let mut first_line: HashMap<(String, String), u64> = HashMap::new();
    for row in &file.rows {
        match validate(&row.form, authorities, today) {
            Ok(valid) => {
                let person = (valid.authority.clone(), valid.registry_number.clone());
                if let Some(earlier) = first_line.get(&person) {
                    errors.push(RowError {
                        line: row.line,
                        column: file.column_of("registry_number").unwrap_or_default(),
                        field: "registry_number",
                        code: "duplicate_person",
                        ja: format!("{}行目: {earlier}行目と同じ方の申請です", row.line),
                        en: format!("line {}: the same person as line {earlier}", row.line),
                    });
                } else {
                    first_line.insert(person, row.line);
                    good.push((row.line, valid));
                }
            }
            Err(problems) => errors.extend(problems.into_iter().map(|p| {
                let column = file.column_of(p.field).unwrap_or_default();
                let place = if column.is_empty() {
                    String::new()
                } else {
                    format!("「{column}」")
                };
                RowError {
                    line: row.line,
                    ja: format!("{}行目{place}: {}", row.line, p.ja),
                    en: format!("line {} [{}]: {}", row.line, p.field, p.en),
                    column,
                    field: p.field,
                    code: p.code,
                }
            })),
        }
    }
    errors.sort_by_key(|e| e.line);
    (good, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const HEADER: &str = "認証局,氏名,氏名（カナ）,氏名（ローマ字）,生年月日,職種,登録番号,メールアドレス,郵便番号,住所,送付先,送付先団体名";

    fn good(registry: &str) -> String {
        format!(
            "jma,山田 太郎,ヤマダ タロウ,YAMADA TARO,1980/04/01,医師,{registry},taro@example.jp,113-8621,東京都文京区本駒込2-28-16,自宅,"
        )
    }

    fn file(rows: &[&str]) -> String {
        let mut text = format!("{HEADER}\r\n");
        for row in rows {
            text.push_str(row);
            text.push_str("\r\n");
        }
        text
    }

    fn check(bytes: &[u8]) -> (Vec<(u64, ValidApplication)>, Vec<RowError>) {
        let parsed = parse(bytes).unwrap();
        validate_rows(
            &parsed,
            &crate::config::Config::default().authorities,
            date!(2026 - 11 - 22),
        )
    }

    #[test]
    fn utf8_bom_and_cp932_read_alike() {
        let text = file(&[&good("1"), &good("2")]);
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice(text.as_bytes());
        let sjis = encoding_rs::SHIFT_JIS.encode(&text).0.into_owned();
        let mut seen = Vec::new();
        for bytes in [text.as_bytes().to_vec(), bom, sjis] {
            let parsed = parse(&bytes).unwrap();
            seen.push(parsed.encoding);
            let (good, errors) = check(&bytes);
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(good.len(), 2);
            assert_eq!(good[0].1.name_kanji, "山田 太郎");
            assert_eq!(good[1].0, 3);
        }
        assert_eq!(seen, ["UTF-8", "UTF-8 (BOM)", "Shift_JIS (CP932)"]);
    }

    #[test]
    fn english_headers_work_too() {
        let text = "authority,name_kanji,name_kana,name_romaji,birth_date,profession,registry_number,email,postal_code,address,delivery\n\
                    jpa,鈴木 花子,スズキ ハナコ,SUZUKI HANAKO,19900317,pharmacist,999999,h@example.jp,100-0005,東京都,home\n";
        let (good, errors) = check(text.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(good[0].1.subscriber_id, "999999-jpa");
    }

    #[test]
    fn every_bad_row_is_named_by_line_and_column_without_the_birth_date() {
        let text = file(&[
            &good("1"),
            "jma,山田 太郎,やまだ,YAMADA TARO,1980/02/30,医師,2,taro@example.jp,1138621,東京都,自宅,",
            "\"jma\",山田 太郎,ヤマダ タロウ,YAMADA TARO,1980/04/01,医師,3,taro@example.jp,113-8621,\"東京都\n文京区\",自宅,",
            "jma,山田 太郎,ヤマダ タロウ,YAMADA TARO,1980/04/01,医師,x,taro@example.jp,113-8621,東京都,自宅,",
            &good("1"),
            "jma,too,few",
            ",,,,,,,,,,,",
            &good("9"),
        ]);
        let (good, errors) = check(text.as_bytes());
        assert_eq!(good.iter().map(|g| g.0).collect::<Vec<_>>(), [2, 10]);
        let found: Vec<(u64, &str, &str)> = errors
            .iter()
            .map(|e| (e.line, e.column.as_str(), e.code))
            .collect();
        // Validation errors come by line; the field-count error is found while parsing.
        assert!(
            found.contains(&(3, "氏名（カナ）", "not_katakana")),
            "{found:?}"
        );
        assert!(found.contains(&(3, "生年月日", "bad_date")), "{found:?}");
        assert!(
            found.contains(&(3, "郵便番号", "bad_postal_code")),
            "{found:?}"
        );
        // A line break inside a quoted cell: the record keeps its first line, later ones count it.
        assert!(found.contains(&(4, "住所", "bad_character")), "{found:?}");
        assert!(
            found.contains(&(6, "登録番号", "bad_registry_number")),
            "{found:?}"
        );
        assert!(
            found.contains(&(7, "登録番号", "duplicate_person")),
            "{found:?}"
        );
        assert!(found.contains(&(8, "", "wrong_field_count")), "{found:?}");
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert!(lines.is_sorted(), "{lines:?}");
        for e in &errors {
            assert!(!e.ja.contains("1980") && !e.en.contains("1980"), "{e:?}");
        }
    }

    #[test]
    fn header_problems_are_listed_together() {
        let text = "認証局,氏名,氏名,好きな色\njma,a,b,c\n";
        let errors = parse(text.as_bytes()).err().unwrap();
        let codes: Vec<&str> = errors.iter().map(|e| e.code).collect();
        assert!(codes.contains(&"duplicate_column"));
        assert!(codes.contains(&"unknown_column"));
        assert!(codes.contains(&"missing_column"));
        assert!(errors.iter().any(|e| e.column == "好きな色"));
    }

    #[test]
    fn undecodable_bytes_and_utf16_are_refused_naming_the_line() {
        let mut bytes = file(&[&good("1")]).into_bytes();
        bytes.extend_from_slice(&[0x82, 0xFF, b'\n']);
        let errors = parse(&bytes).err().unwrap();
        assert_eq!((errors[0].line, errors[0].code), (3, "bad_encoding"));
        let errors = parse(&[0xFF, 0xFE, b'a', 0]).err().unwrap();
        assert_eq!(errors[0].code, "bad_encoding");
    }
}
