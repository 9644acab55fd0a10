//! The few pieces of HTML the report is made of: escaping, base64 for inline images, a
//! section, a table, the page around them and its style sheet. Nothing here links outside
//! the page.

use std::fmt::Write;

/// `text` safe to place in HTML content or in a double- or single-quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `bytes` in standard base64 (RFC 4648, with `=` padding), as `data:` URIs want.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        // Three bytes make four 6-bit digits; a short last chunk pads with `=`.
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                let digit = (n >> (18 - 6 * k)) & 0x3f;
                out.push(char::from(BASE64_ALPHABET[digit as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `data:` URI holding a PNG file's bytes.
pub fn png_data_uri(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64(png))
}

/// `<section id=...>` with its heading; `body` is HTML already.
pub fn section(id: &str, heading: &str, body: &str) -> String {
    format!(
        "<section id=\"{}\">\n<h2>{}</h2>\n{body}\n</section>\n",
        escape(id),
        escape(heading)
    )
}

/// A paragraph of plain text (escaped).
pub fn note(text: &str) -> String {
    format!("<p class=\"note\">{}</p>", escape(text))
}

/// A table with a header row; every cell (header or body) is HTML already.
pub fn table(class: &str, header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table class=\"{}\">\n<thead><tr>", escape(class));
    for h in header {
        let _ = write!(out, "<th scope=\"col\">{h}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            // The first cell names the row.
            if i == 0 {
                let _ = write!(out, "<th scope=\"row\">{cell}</th>");
            } else {
                let _ = write!(out, "<td>{cell}</td>");
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>");
    out
}

/// A fraction with four decimals, or a dash when it is not a number.
pub fn fraction(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "–".to_string()
    }
}

/// Seconds with two decimals.
pub fn seconds(x: f64) -> String {
    format!("{x:.2} s")
}

/// The style sheet: plain, readable, printable. One font for the text and the figures (the
/// serve page's), whatever family the SVG names.
const STYLE: &str = "
:root { --font: 'DejaVu Sans', system-ui, -apple-system, 'Segoe UI', sans-serif;
  --muted: #57606a; --line: #d0d7de; --soft: #f6f8fa; --accent: #1f77b4; }
body { font-family: var(--font); color: #1f2328; max-width: 1040px; margin: 2rem auto;
  padding: 0 1rem; line-height: 1.5; font-size: 16px; }
svg text { font-family: var(--font); }
h1 { font-size: 1.75rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.3rem; border-bottom: 1px solid var(--line); padding-bottom: 0.2rem; margin-top: 2.4rem; }
h3 { font-size: 1.05rem; margin: 1rem 0 0.4rem; }
.lead { color: var(--muted); margin-top: 0; }
nav { margin: 0.8rem 0 1.2rem; display: flex; flex-wrap: wrap; gap: 0.3rem 1rem; }
nav a { color: var(--accent); text-decoration: none; white-space: nowrap; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr)); gap: 0.8rem; }
.figure { border: 1px solid var(--line); border-radius: 0.6rem; background: var(--soft); padding: 0.7rem 0.9rem; }
.figure .value { font-size: 1.6rem; font-weight: 700; line-height: 1.2; font-variant-numeric: tabular-nums; }
.figure .label { font-weight: 600; overflow-wrap: anywhere; }
.figure .detail { color: var(--muted); font-size: 0.82rem; overflow-wrap: anywhere; }
.figure.main { grid-column: span 2; background: #eaf3fb; border-color: #9cc3e6; }
.figure.main .value { font-size: 2.6rem; color: #0b4f8a; }
table { border-collapse: collapse; margin: 0.6rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: right; }
thead th { background: #f4f4f4; }
thead th:first-child { text-align: left; }
th[scope=row] { text-align: left; background: #fafafa; font-weight: 600; }
table.confusion td { min-width: 3.5rem; text-align: center; font-weight: 600; }
table.settings { font-size: 0.9rem; width: 100%; }
table.settings td, table.settings thead th { text-align: left; overflow-wrap: anywhere; }
.side-by-side { display: grid; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr)); gap: 1.5rem; align-items: start; }
.side-by-side > div { min-width: 0; }
.axis { color: var(--muted); font-size: 0.9rem; }
svg { max-width: 100%; height: auto; }
.mistakes { display: flex; flex-wrap: wrap; gap: 0.8rem; }
figure { margin: 0; }
figure.mistake { width: 150px; font-size: 0.8rem; }
figure.mistake.explained { width: 200px; }
.pair { display: flex; gap: 4px; align-items: flex-start; }
figure.mistake img { display: block; border: 1px solid #ccc; image-rendering: auto; }
figcaption .file { word-break: break-all; color: var(--muted); }
.missing { width: 96px; height: 96px; background: #eee; display: flex; align-items: center;
  justify-content: center; color: #777; font-size: 0.7rem; text-align: center; }
pre { background: var(--soft); border: 1px solid #e3e3e3; padding: 0.7rem; overflow-x: auto;
  font-size: 0.8rem; max-height: 32rem; }
.note { color: var(--muted); font-style: italic; }
";

/// The whole page: the title, a lead line, a table of contents linking each section, the
/// headline figures, the sections. `title` and `lead` are plain text; `headline` and the
/// sections are HTML, the sections' ids and headings in `contents`.
pub fn page(
    title: &str,
    lead: &str,
    headline: &str,
    contents: &[(&str, &str)],
    sections: &[String],
) -> String {
    let mut nav = String::new();
    for (id, heading) in contents {
        let _ = write!(nav, "<a href=\"#{}\">{}</a>", escape(id), escape(heading));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header>\n<h1>{title}</h1>\n<p class=\"lead\">{lead}</p>\n</header>\n\
         <main>\n{headline}<nav>{nav}</nav>\n{}</main>\n</body>\n</html>\n",
        sections.concat(),
        title = escape(title),
        lead = escape(lead),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_every_character_html_gives_meaning() {
        assert_eq!(
            escape(r#"<b>&"it's"</b>"#),
            "&lt;b&gt;&amp;&quot;it&#39;s&quot;&lt;/b&gt;"
        );
        assert_eq!(escape("plain text, é ✓"), "plain text, é ✓");
        // Escaping is not idempotent: an ampersand already escaped is escaped again.
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn sections_and_tables_escape_what_they_are_given_as_text() {
        let s = section("per-class", "A <heading>", &note("x < y"));
        assert!(s.starts_with("<section id=\"per-class\">"));
        assert!(s.contains("<h2>A &lt;heading&gt;</h2>") && s.contains("x &lt; y"));
        let t = table("t", &["h".into()], &[vec!["row".into(), "1".into()]]);
        assert!(t.contains("<th scope=\"row\">row</th><td>1</td>"));
        let p = page("T&", "lead <", "", &[("roc", "ROC")], &[s]);
        assert!(p.contains("<title>T&amp;</title>") && p.contains("href=\"#roc\""));
        assert!(p.contains("lead &lt;"));
    }
}
