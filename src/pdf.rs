//! QR cards for the mail house: a print batch as a PDF, 10-up on A4 with crop marks, or one
//! card per page for a card printer.
//!
//! Written with `pdf-writer` (typed PDF objects, no layout) and `subsetter` (font subsets),
//! not printpdf: printpdf 0.7 writes a ToUnicode map that reads shared CJK glyphs as Kangxi
//! radicals (so `pdftotext` finds ⼭⽥, not 山田) and does not mark its subsets, and printpdf
//! 0.12 is an HTML layout engine. What is hand-written here is the card's layout and a JPEG
//! header reader (for width, height and colour components, so the photo is embedded as is).
//!
//! The same batch always gives the same bytes: objects are written in card order, the font
//! subset's tag is a hash of its glyphs, the document id is the batch id, and the only date
//! is the batch's creation instant.

use std::collections::HashMap;

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo, UnicodeCmap};
use pdf_writer::{Content, Date, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use qrcode::{Color, EcLevel, QrCode};
use sha2::{Digest, Sha256};
use time::{Date as Day, OffsetDateTime};
use uuid::Uuid;

pub use hpki_events::vocabulary::Imposition;

/// IPAexGothic (IPA Font License v1.0, `templates/fonts/`): built in, so a fresh machine
/// needs no font installed.
const FONT: &[u8] = include_bytes!("../templates/fonts/ipaexg.ttf");
const FONT_NAME: &str = "IPAexGothic";

/// Millimetres to points.
const MM: f32 = 72.0 / 25.4;
const CARD_W: f32 = 85.6;
const CARD_H: f32 = 54.0;
const A4_W: f32 = 210.0;
const A4_H: f32 = 297.0;

pub struct Photo {
    /// `image/jpeg` (embedded as is) or `image/png` (decoded, then deflated).
    pub media_type: String,
    pub bytes: Vec<u8>,
}

pub struct CardFace {
    pub sequence: u32,
    pub card_id: String,
    pub name_kanji: String,
    pub name_kana: String,
    pub subscriber_id: String,
    pub authority: String,
    pub issued_on: Day,
    pub last_usable_day: Day,
    pub password_hint: String,
    pub registration_url: String,
    pub photo: Option<Photo>,
}

pub struct Batch<'a> {
    pub batch_id: Uuid,
    pub title: String,
    pub created_at: OffsetDateTime,
    pub imposition: Imposition,
    pub cards: &'a [CardFace],
}

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("card {sequence}: the photo cannot be read ({why})")]
    Photo { sequence: u32, why: String },
    #[error("card {sequence}: the registration URL does not fit in a QR code ({why})")]
    Qr { sequence: u32, why: String },
    #[error("the font cannot be subset: {0}")]
    Font(String),
}

/// `2026年11月22日`.
fn japanese_date(day: Day) -> String {
    format!("{}年{}月{}日", day.year(), u8::from(day.month()), day.day())
}

/// The built-in font: glyphs, widths, and the subset being collected.
struct Font<'f> {
    face: ttf_parser::Face<'f>,
    units: f32,
    remapper: subsetter::GlyphRemapper,
    /// Old glyph ids in the order of their new ids, and the text each stands for.
    used: Vec<(u16, char)>,
    new_ids: HashMap<u16, u16>,
}

impl<'f> Font<'f> {
    fn new() -> Font<'f> {
        let face = ttf_parser::Face::parse(FONT, 0).expect("the built-in font parses");
        let units = face.units_per_em() as f32;
        let mut font = Font {
            face,
            units,
            remapper: subsetter::GlyphRemapper::new(),
            used: Vec::new(),
            new_ids: HashMap::new(),
        };
        font.used.push((0, '\u{FFFD}'));
        font.new_ids.insert(0, 0);
        font
    }

    fn glyph(&self, ch: char) -> u16 {
        self.face.glyph_index(ch).map_or(0, |g| g.0)
    }

    /// Width of `text` at 1 pt.
    fn width(&self, text: &str) -> f32 {
        text.chars()
            .map(|c| {
                self.face
                    .glyph_hor_advance(ttf_parser::GlyphId(self.glyph(c)))
                    .unwrap_or(0) as f32
                    / self.units
            })
            .sum()
    }

    /// The string of new glyph ids (two bytes each, Identity-H) for `text`.
    fn encode(&mut self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() * 2);
        for ch in text.chars() {
            let old = self.glyph(ch);
            let new = match self.new_ids.get(&old) {
                Some(new) => *new,
                None => {
                    let new = self.remapper.remap(old);
                    self.new_ids.insert(old, new);
                    self.used.push((old, ch));
                    new
                }
            };
            out.extend_from_slice(&new.to_be_bytes());
        }
        out
    }
}

/// A JPEG's size and colour components, from its first SOF marker.
fn jpeg_header(bytes: &[u8]) -> Option<(u32, u32, u8)> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    while i + 9 < bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        let length = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            let height = u16::from_be_bytes([bytes[i + 5], bytes[i + 6]]) as u32;
            let width = u16::from_be_bytes([bytes[i + 7], bytes[i + 8]]) as u32;
            return Some((width, height, bytes[i + 9]));
        }
        i += 2 + length;
    }
    None
}

/// A photo ready to embed: the stream, its filter and its pixel geometry.
struct Image {
    data: Vec<u8>,
    filter: Filter,
    width: u32,
    height: u32,
    components: u8,
}

/// Whether a photo (`image/jpeg` or `image/png`) is one the card can show: read here as the
/// print will read it, so that a file that only begins like an image is refused when it
/// comes in, not when a batch for the mail house is made. The reason when it is not.
pub fn photo_readable(media_type: &str, bytes: &[u8]) -> Result<(), String> {
    match image(0, media_type, bytes) {
        Ok(_) => Ok(()),
        Err(PdfError::Photo { why, .. }) => Err(why),
        Err(other) => Err(other.to_string()),
    }
}

fn image(sequence: u32, media_type: &str, bytes: &[u8]) -> Result<Image, PdfError> {
    let bad = |why: &str| PdfError::Photo {
        sequence,
        why: why.to_owned(),
    };
    match media_type {
        "image/jpeg" => {
            let (width, height, components) =
                jpeg_header(bytes).ok_or_else(|| bad("not a JPEG"))?;
            if ![1, 3, 4].contains(&components) || width == 0 || height == 0 {
                return Err(bad("an unusual JPEG"));
            }
            Ok(Image {
                data: bytes.to_vec(),
                filter: Filter::DctDecode,
                width,
                height,
                components,
            })
        }
        "image/png" => {
            let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
            decoder.set_transformations(png::Transformations::normalize_to_color8());
            let mut reader = decoder.read_info().map_err(|e| bad(&e.to_string()))?;
            let mut pixels = vec![
                0;
                reader
                    .output_buffer_size()
                    .ok_or_else(|| bad("too large"))?
            ];
            let info = reader
                .next_frame(&mut pixels)
                .map_err(|e| bad(&e.to_string()))?;
            pixels.truncate(info.buffer_size());
            let (width, height) = (info.width, info.height);
            // Alpha is dropped (laid on white); grey stays grey.
            let (data, components) = match info.color_type {
                png::ColorType::Grayscale => (pixels, 1),
                png::ColorType::Rgb => (pixels, 3),
                png::ColorType::GrayscaleAlpha => {
                    (pixels.chunks(2).map(|p| blend(p[0], p[1])).collect(), 1)
                }
                png::ColorType::Rgba => (
                    pixels
                        .chunks(4)
                        .flat_map(|p| [blend(p[0], p[3]), blend(p[1], p[3]), blend(p[2], p[3])])
                        .collect(),
                    3,
                ),
                png::ColorType::Indexed => return Err(bad("an indexed PNG was not expanded")),
            };
            let data = miniz_oxide::deflate::compress_to_vec_zlib(&data, 6);
            Ok(Image {
                data,
                filter: Filter::FlateDecode,
                width,
                height,
                components,
            })
        }
        other => Err(bad(&format!("{other} is not JPEG or PNG"))),
    }
}

fn blend(value: u8, alpha: u8) -> u8 {
    ((value as u16 * alpha as u16 + 255 * (255 - alpha as u16)) / 255) as u8
}

/// The QR code as a 1-bit image with its 4-module quiet zone (white = 1), and its width in
/// modules. Drawn scaled without interpolation, it prints as sharp as vector squares.
fn qr_image(sequence: u32, url: &str) -> Result<(Vec<u8>, u32), PdfError> {
    let code = QrCode::with_error_correction_level(url.as_bytes(), EcLevel::M).map_err(|e| {
        PdfError::Qr {
            sequence,
            why: e.to_string(),
        }
    })?;
    let modules = code.width();
    let size = modules + 8;
    let row_bytes = size.div_ceil(8);
    let mut bits = vec![0xFFu8; row_bytes * size];
    for (i, color) in code.to_colors().iter().enumerate() {
        if *color == Color::Dark {
            let (x, y) = (i % modules + 4, i / modules + 4);
            bits[y * row_bytes + x / 8] &= !(0x80 >> (x % 8));
        }
    }
    Ok((bits, size as u32))
}

/// Writes a text run at (x, y) mm in `size` pt, shrunk to fit `max` mm when given.
fn text(
    content: &mut Content,
    font: &mut Font,
    s: &str,
    x: f32,
    y: f32,
    size: f32,
    max: Option<f32>,
) {
    let mut size = size;
    if let Some(max) = max {
        let width = font.width(s) * size / MM;
        if width > max {
            size *= max / width;
        }
    }
    let glyphs = font.encode(s);
    content.begin_text();
    content.set_font(Name(b"F1"), size);
    content.next_line(x * MM, y * MM);
    content.show(Str(&glyphs));
    content.end_text();
}

/// Draws one card with its lower-left corner at (x, y) mm.
fn card(
    content: &mut Content,
    font: &mut Font,
    face: &CardFace,
    photo: Option<(&str, f32)>,
    qr: &str,
    x: f32,
    y: f32,
) {
    // Header: the authority and what the card is for.
    content.set_fill_gray(0.0);
    text(
        content,
        font,
        &face.authority,
        x + 4.0,
        y + 48.0,
        7.5,
        Some(60.0),
    );
    text(
        content,
        font,
        "HPKIセカンド電子証明書 初回登録用QRコード",
        x + 4.0,
        y + 44.2,
        5.5,
        Some(50.0),
    );
    // The photo, in a 20 × 25 mm box, keeping its aspect ratio; a grey frame without one.
    let (bx, by, bw, bh) = (x + 4.0, y + 15.0, 20.0, 25.0);
    match photo {
        Some((name, aspect)) => {
            let (w, h) = if aspect > bw / bh {
                (bw, bw / aspect)
            } else {
                (bh * aspect, bh)
            };
            content.save_state();
            content.transform([
                w * MM,
                0.0,
                0.0,
                h * MM,
                (bx + (bw - w) / 2.0) * MM,
                (by + (bh - h) / 2.0) * MM,
            ]);
            content.x_object(Name(name.as_bytes()));
            content.restore_state();
        }
        None => {
            content.set_stroke_gray(0.6);
            content.set_line_width(0.5);
            content.rect(bx * MM, by * MM, bw * MM, bh * MM);
            content.stroke();
            text(content, font, "写真なし", bx + 5.0, by + 11.5, 6.0, None);
        }
    }
    // Who, and the dates.
    let left = x + 27.0;
    text(
        content,
        font,
        &face.name_kanji,
        left,
        y + 35.0,
        11.0,
        Some(27.0),
    );
    text(
        content,
        font,
        &face.name_kana,
        left,
        y + 31.0,
        6.5,
        Some(27.0),
    );
    text(
        content,
        font,
        &format!("利用者ID {}", face.subscriber_id),
        left,
        y + 26.0,
        6.5,
        Some(27.0),
    );
    text(
        content,
        font,
        &format!("発行日 {}", japanese_date(face.issued_on)),
        left,
        y + 21.5,
        6.0,
        Some(27.0),
    );
    text(
        content,
        font,
        &format!("有効期限 {}", japanese_date(face.last_usable_day)),
        left,
        y + 17.5,
        6.0,
        Some(27.0),
    );
    // The QR code, 27 mm square with its quiet zone, at the right.
    let q = 27.0;
    content.save_state();
    content.transform([
        q * MM,
        0.0,
        0.0,
        q * MM,
        (x + CARD_W - q - 2.5) * MM,
        (y + 15.5) * MM,
    ]);
    content.x_object(Name(qr.as_bytes()));
    content.restore_state();
    // The password hint and the batch sequence number.
    text(
        content,
        font,
        &face.password_hint,
        x + 4.0,
        y + 9.5,
        6.0,
        Some(CARD_W - 8.0),
    );
    text(
        content,
        font,
        &format!("No.{}  {}", face.sequence, face.card_id),
        x + 4.0,
        y + 4.0,
        5.0,
        Some(CARD_W - 8.0),
    );
}

/// Short crop marks outside the grid of `columns` × `rows` cards whose lower-left is (x0, y0).
fn crop_marks(content: &mut Content, x0: f32, y0: f32, columns: usize, rows: usize) {
    let (gap, length) = (2.0, 6.0);
    let (width, height) = (columns as f32 * CARD_W, rows as f32 * CARD_H);
    content.set_stroke_gray(0.0);
    content.set_line_width(0.25);
    for c in 0..=columns {
        let x = (x0 + c as f32 * CARD_W) * MM;
        for (from, to) in [
            (y0 - gap - length, y0 - gap),
            (y0 + height + gap, y0 + height + gap + length),
        ] {
            content.move_to(x, from * MM);
            content.line_to(x, to * MM);
        }
    }
    for r in 0..=rows {
        let y = (y0 + r as f32 * CARD_H) * MM;
        for (from, to) in [
            (x0 - gap - length, x0 - gap),
            (x0 + width + gap, x0 + width + gap + length),
        ] {
            content.move_to(from * MM, y);
            content.line_to(to * MM, y);
        }
    }
    content.stroke();
}

/// Renders the batch.
pub fn render(batch: &Batch) -> Result<Vec<u8>, PdfError> {
    let mut pdf = Pdf::new();
    let mut next = 1;
    let mut id = || {
        let r = Ref::new(next);
        next += 1;
        r
    };
    let (catalog, tree, font_id, cid_id, descriptor_id, file_id, cmap_id, info_id) =
        (id(), id(), id(), id(), id(), id(), id(), id());
    let mut font = Font::new();
    let (per_page, columns, page_w, page_h) = match batch.imposition {
        Imposition::TenUp => (10, 2, A4_W, A4_H),
        Imposition::OnePerPage => (1, 1, CARD_W, CARD_H),
    };
    let rows = per_page / columns;
    let (x0, y0) = (
        (page_w - columns as f32 * CARD_W) / 2.0,
        (page_h - rows as f32 * CARD_H) / 2.0,
    );
    let mut pages = Vec::new();
    for (page_index, cards) in batch.cards.chunks(per_page).enumerate() {
        let page_id = id();
        let content_id = id();
        let mut content = Content::new();
        let mut images: Vec<(String, Ref)> = Vec::new();
        for (slot, face) in cards.iter().enumerate() {
            let (column, row) = (slot % columns, slot / columns);
            let (x, y) = (
                x0 + column as f32 * CARD_W,
                y0 + (rows - 1 - row) as f32 * CARD_H,
            );
            let photo = match &face.photo {
                Some(photo) => {
                    let image = image(face.sequence, &photo.media_type, &photo.bytes)?;
                    let image_id = id();
                    let name = format!("P{}", face.sequence);
                    let mut xobject = pdf.image_xobject(image_id, &image.data);
                    xobject.filter(image.filter);
                    xobject.width(image.width as i32);
                    xobject.height(image.height as i32);
                    let space = xobject.color_space();
                    match image.components {
                        1 => space.device_gray(),
                        4 => space.device_cmyk(),
                        _ => space.device_rgb(),
                    };
                    xobject.bits_per_component(8);
                    if image.components == 4 {
                        // Adobe's CMYK JPEGs are stored inverted.
                        xobject.decode([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
                    }
                    xobject.finish();
                    images.push((name.clone(), image_id));
                    Some((name, image.width as f32 / image.height as f32))
                }
                None => None,
            };
            let (bits, size) = qr_image(face.sequence, &face.registration_url)?;
            let qr_id = id();
            let qr_name = format!("Q{}", face.sequence);
            let mut xobject = pdf.image_xobject(qr_id, &bits);
            xobject.width(size as i32);
            xobject.height(size as i32);
            xobject.color_space().device_gray();
            xobject.bits_per_component(1);
            xobject.interpolate(false);
            xobject.finish();
            images.push((qr_name.clone(), qr_id));
            card(
                &mut content,
                &mut font,
                face,
                photo.as_ref().map(|(n, a)| (n.as_str(), *a)),
                &qr_name,
                x,
                y,
            );
        }
        if batch.imposition == Imposition::TenUp {
            crop_marks(&mut content, x0, y0, columns, rows);
            text(
                &mut content,
                &mut font,
                &format!(
                    "{}  {}/{}",
                    batch.title,
                    page_index + 1,
                    batch.cards.len().div_ceil(per_page)
                ),
                x0,
                4.0,
                6.0,
                Some(170.0),
            );
        }
        let data = miniz_oxide::deflate::compress_to_vec_zlib(&content.finish(), 6);
        pdf.stream(content_id, &data).filter(Filter::FlateDecode);
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, page_w * MM, page_h * MM));
        page.parent(tree);
        page.contents(content_id);
        let mut resources = page.resources();
        resources.fonts().pair(Name(b"F1"), font_id);
        let mut xobjects = resources.x_objects();
        for (name, image_id) in &images {
            xobjects.pair(Name(name.as_bytes()), *image_id);
        }
        xobjects.finish();
        resources.finish();
        page.finish();
        pages.push(page_id);
    }
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(pages.iter().copied())
        .count(pages.len() as i32);
    write_font(
        &mut pdf,
        &font,
        font_id,
        cid_id,
        descriptor_id,
        file_id,
        cmap_id,
    )?;
    let at = batch.created_at.to_offset(time::UtcOffset::UTC);
    let date = Date::new(at.year() as u16)
        .month(u8::from(at.month()))
        .day(at.day())
        .hour(at.hour())
        .minute(at.minute())
        .second(at.second())
        .utc_offset_hour(0)
        .utc_offset_minute(0);
    pdf.document_info(info_id)
        .title(TextStr(&batch.title))
        .producer(TextStr("hpki-backoffice"))
        .creation_date(date);
    let id = batch.batch_id.as_bytes().to_vec();
    pdf.set_file_id((id.clone(), id));
    Ok(pdf.finish())
}

/// The Type 0 font over the subset of IPAexGothic the cards used, with a ToUnicode map so
/// text can be searched and copied.
fn write_font(
    pdf: &mut Pdf,
    font: &Font,
    font_id: Ref,
    cid_id: Ref,
    descriptor_id: Ref,
    file_id: Ref,
    cmap_id: Ref,
) -> Result<(), PdfError> {
    let subset =
        subsetter::subset(FONT, 0, &font.remapper).map_err(|e| PdfError::Font(format!("{e:?}")))?;
    // The subset's tag (six capitals, as PDF readers expect) names this set of glyphs.
    let mut hasher = Sha256::new();
    for (old, _) in &font.used {
        hasher.update(old.to_be_bytes());
    }
    let digest = hasher.finalize();
    let tag: String = digest
        .iter()
        .take(6)
        .map(|b| (b'A' + b % 26) as char)
        .collect();
    let base = format!("{tag}+{FONT_NAME}");
    let system = SystemInfo {
        registry: Str(b"Adobe"),
        ordering: Str(b"Identity"),
        supplement: 0,
    };

    pdf.type0_font(font_id)
        .base_font(Name(base.as_bytes()))
        .encoding_predefined(Name(b"Identity-H"))
        .descendant_font(cid_id)
        .to_unicode(cmap_id);
    let widths: Vec<f32> = font
        .used
        .iter()
        .map(|(old, _)| {
            font.face
                .glyph_hor_advance(ttf_parser::GlyphId(*old))
                .unwrap_or(0) as f32
                * 1000.0
                / font.units
        })
        .collect();
    let mut cid = pdf.cid_font(cid_id);
    cid.subtype(CidFontType::Type2);
    cid.base_font(Name(base.as_bytes()));
    cid.system_info(system);
    cid.font_descriptor(descriptor_id);
    cid.default_width(1000.0);
    cid.cid_to_gid_map_predefined(Name(b"Identity"));
    cid.widths().consecutive(0, widths);
    cid.finish();
    let face = &font.face;
    let scale = |v: i16| v as f32 * 1000.0 / font.units;
    let bbox = face.global_bounding_box();
    pdf.font_descriptor(descriptor_id)
        .name(Name(base.as_bytes()))
        .flags(FontFlags::SYMBOLIC)
        .bbox(Rect::new(
            scale(bbox.x_min),
            scale(bbox.y_min),
            scale(bbox.x_max),
            scale(bbox.y_max),
        ))
        .italic_angle(0.0)
        .ascent(scale(face.ascender()))
        .descent(scale(face.descender()))
        .cap_height(scale(face.capital_height().unwrap_or(face.ascender())))
        .stem_v(80.0)
        .font_file2(file_id);
    let compressed = miniz_oxide::deflate::compress_to_vec_zlib(&subset, 6);
    pdf.stream(file_id, &compressed)
        .filter(Filter::FlateDecode)
        .pair(Name(b"Length1"), subset.len() as i32);
    let mut cmap = UnicodeCmap::new(Name(b"Custom"), system);
    for (new, (_, ch)) in font.used.iter().enumerate().skip(1) {
        cmap.pair(new as u16, *ch);
    }
    pdf.stream(cmap_id, cmap.finish().as_slice());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jpeg_header_gives_its_size() {
        // SOI, an APP0 of 4 bytes, SOF0 for 300 × 400 with 3 components.
        let jpeg = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01,
            0x90, 0x01, 0x2C, 0x03, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(jpeg_header(&jpeg), Some((300, 400, 3)));
        assert_eq!(jpeg_header(b"GIF89a"), None);
    }

    #[test]
    fn the_qr_image_has_its_quiet_zone() {
        let (bits, size) = qr_image(1, "https://portal.example.jp/r/abc").unwrap();
        let row = (size as usize).div_ceil(8);
        // The first four rows are white.
        assert!(bits[..4 * row].iter().all(|b| *b == 0xFF));
        // The finder pattern's corner is dark at (4, 4).
        assert_eq!(bits[4 * row] & (0x80 >> 4), 0);
    }
}
