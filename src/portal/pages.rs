//! The portal's pages: minijinja templates from `templates/portal/`, compiled into the binary,
//! and their words in Japanese and English from `templates/portal/messages.json`.

use std::collections::HashMap;

use actix_web::HttpRequest;
use serde_json::{Map, Value, json};

/// The templates, by name, as shipped.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "base.html",
        include_str!("../../templates/portal/base.html"),
    ),
    (
        "qr_problem.html",
        include_str!("../../templates/portal/qr_problem.html"),
    ),
    (
        "password.html",
        include_str!("../../templates/portal/password.html"),
    ),
    (
        "sign_in.html",
        include_str!("../../templates/portal/sign_in.html"),
    ),
    (
        "register.html",
        include_str!("../../templates/portal/register.html"),
    ),
    (
        "label.html",
        include_str!("../../templates/portal/label.html"),
    ),
    (
        "done.html",
        include_str!("../../templates/portal/done.html"),
    ),
    (
        "problem.html",
        include_str!("../../templates/portal/problem.html"),
    ),
];

pub const MESSAGES: &str = include_str!("../../templates/portal/messages.json");

pub const CSS: &str = include_str!("../../templates/portal/static/portal.css");
pub const JS: &str = include_str!("../../templates/portal/static/portal.js");

/// The language a page is shown in: Japanese unless asked otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Ja,
    En,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    /// `?lang=` first (the toggle), then the `hpki_lang` cookie, then Japanese.
    pub fn of(req: &HttpRequest) -> Lang {
        let asked = req
            .query_string()
            .split('&')
            .find_map(|p| p.strip_prefix("lang="))
            .map(str::to_owned)
            .or_else(|| req.cookie(LANG_COOKIE).map(|c| c.value().to_owned()));
        match asked.as_deref() {
            Some("en") => Lang::En,
            _ => Lang::Ja,
        }
    }

    /// A message in this language.
    pub fn pick(self, message: &crate::problem::Message) -> &str {
        match self {
            Lang::Ja => &message.ja,
            Lang::En => &message.en,
        }
    }

    /// Whether the request asked to switch (so the choice is remembered in a cookie).
    pub fn asked(req: &HttpRequest) -> Option<Lang> {
        req.query_string()
            .split('&')
            .find_map(|p| p.strip_prefix("lang="))
            .map(|l| if l == "en" { Lang::En } else { Lang::Ja })
    }
}

pub const LANG_COOKIE: &str = "hpki_lang";

pub struct Pages {
    env: minijinja::Environment<'static>,
    /// key -> [ja, en]
    messages: HashMap<String, [String; 2]>,
}

impl Pages {
    /// The portal's pages.
    pub fn new() -> anyhow::Result<Pages> {
        Pages::from(TEMPLATES, MESSAGES)
    }

    /// Pages from a set of templates and their messages (`{key: [ja, en]}` JSON). Every value
    /// is HTML-escaped unless a template says otherwise; `|jst` shows an RFC 3339 time in
    /// Japan time.
    pub fn from(
        templates: &[(&'static str, &'static str)],
        messages: &str,
    ) -> anyhow::Result<Pages> {
        let mut env = minijinja::Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.add_filter("jst", |value: String| {
            time::OffsetDateTime::parse(&value, &time::format_description::well_known::Rfc3339)
                .map_or(value, crate::clock::show_jst)
        });
        for (name, source) in templates {
            env.add_template(name, source)
                .map_err(|e| anyhow::anyhow!("the template {name} does not parse: {e}"))?;
        }
        let messages: HashMap<String, [String; 2]> = serde_json::from_str(messages)
            .map_err(|e| anyhow::anyhow!("the templates' messages.json: {e}"))?;
        Ok(Pages { env, messages })
    }

    /// One message in one language; the key itself when it is missing (a test finds that).
    pub fn text(&self, lang: Lang, key: &str) -> String {
        self.messages.get(key).map_or_else(
            || key.to_owned(),
            |m| m[(lang == Lang::En) as usize].clone(),
        )
    }

    /// Renders `template` with `values`, the words of `lang` as `t`, and the page's title.
    pub fn render(
        &self,
        template: &str,
        lang: Lang,
        title: &str,
        values: Value,
    ) -> anyhow::Result<String> {
        let mut t: Map<String, Value> = self
            .messages
            .iter()
            .map(|(k, m)| (k.clone(), json!(m[(lang == Lang::En) as usize])))
            .collect();
        t.insert("title".into(), json!(self.text(lang, title)));
        let mut context = json!({
            "lang": lang.code(),
            "other_lang": if lang == Lang::En { "ja" } else { "en" },
            "page": template.trim_end_matches(".html"),
            "t": t,
        });
        if let (Value::Object(into), Value::Object(from)) = (&mut context, values) {
            into.extend(from);
        }
        let html = self
            .env
            .get_template(template)
            .and_then(|t| t.render(&context))
            .map_err(|e| anyhow::anyhow!("rendering {template}: {e}"))?;
        Ok(html)
    }
}
