//! The report's charts, as hand-written SVG (no plotting crate): what
//! people would rather look at than read.
//!
//! * [`cpu`]: server CPU µs per answered query, one bar per (server, mix),
//!   grouped by mix, one colour per server; any set of servers and mixes.
//! * [`failover`]: the alias's answers polled around the promote: which
//!   target each answer named (one lane per target, plus "no answer"),
//!   against the time since the promote request, with the promote, the
//!   moment PostgreSQL accepted connections and the sidecar's switch marked.
//!
//! Both are written next to results.md (`cpu.svg`, `failover.svg`) and
//! linked from it.

use std::fmt::Write as _;

/// One bar: a server's median CPU µs per query in one mix.
pub struct Bar {
    pub mix: String,
    pub server: String,
    pub us_per_query: f64,
}

/// One polled answer: seconds since the promote request (negative before
/// it) and the CNAME target the alias named (`None`: no answer or no CNAME).
pub struct Poll {
    pub t: f64,
    pub target: Option<String>,
}

/// Moments marked on the failover chart, seconds after the promote request.
pub struct Marks {
    pub pg_ready: Option<f64>,
    pub switched: Option<f64>,
    pub followed: Option<f64>,
}

/// Colours for the servers, in order (cycled beyond).
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
];

/// Escapes text for SVG (XML) content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// A "nice" upper bound for an axis (1, 2 or 5 times a power of ten) and
/// its tick step.
fn nice_max(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.2);
    }
    let mag = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if max <= m * mag {
            let top = m * mag;
            return (top, top / 5.0);
        }
    }
    (10.0 * mag, 2.0 * mag)
}

fn header(s: &mut String, w: f64, h: f64, title: &str) {
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
            font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(s, "<title>{}</title>", esc(title));
    let _ = writeln!(s, "<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        w / 2.0,
        esc(title)
    );
}

/// The bar chart of CPU µs per query: groups by mix (in the order first
/// seen), one bar per server (colours in the order first seen). A bar
/// whose value is not a number (no answered queries) is left out.
pub fn cpu(bars: &[Bar], title: &str) -> String {
    let mut mixes: Vec<&str> = Vec::new();
    let mut servers: Vec<&str> = Vec::new();
    for b in bars {
        if !mixes.contains(&b.mix.as_str()) {
            mixes.push(&b.mix);
        }
        if !servers.contains(&b.server.as_str()) {
            servers.push(&b.server);
        }
    }
    let (left, right, top, bottom) = (70.0, 170.0, 40.0, 60.0);
    let bar_w = 14.0;
    let group_w = (servers.len().max(1) as f64) * bar_w + 20.0;
    let plot_w = (mixes.len().max(1) as f64 * group_w).max(200.0);
    let plot_h = 300.0;
    let (w, h) = (left + plot_w + right, top + plot_h + bottom);
    let max = bars
        .iter()
        .map(|b| b.us_per_query)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (ymax, step) = nice_max(max);
    let y = |v: f64| top + plot_h - v / ymax * plot_h;
    let mut s = String::new();
    header(&mut s, w, h, title);
    // Axes, grid and tick labels.
    let mut v = 0.0;
    while v <= ymax + step / 2.0 {
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" \
                y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + plot_w,
            left - 6.0,
            y(v) + 4.0,
            fmt_tick(v),
            yy = y(v),
        );
        v += step;
    }
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"black\"/>\n<line x1=\"{left}\" \
            y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
        top + plot_h,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    let _ = writeln!(
        s,
        "<text class=\"axis-label\" x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\">\
            server CPU µs per query</text>",
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    let _ = writeln!(
        s,
        "<text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">mix</text>",
        left + plot_w / 2.0,
        h - 12.0
    );
    // The bars, group by group.
    for (gi, mix) in mixes.iter().enumerate() {
        let gx = left + gi as f64 * group_w + 10.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            gx + (group_w - 20.0) / 2.0,
            top + plot_h + 18.0,
            esc(mix)
        );
        for (si, server) in servers.iter().enumerate() {
            let Some(b) = bars
                .iter()
                .find(|b| b.mix == *mix && b.server == *server && b.us_per_query.is_finite())
            else {
                continue;
            };
            let x = gx + si as f64 * bar_w;
            let top_y = y(b.us_per_query);
            let _ = writeln!(
                s,
                "<rect class=\"bar\" x=\"{x:.1}\" y=\"{top_y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                    <title>{} mix {}: {:.2} µs/query</title></rect>",
                bar_w - 2.0,
                top + plot_h - top_y,
                PALETTE[si % PALETTE.len()],
                esc(server),
                esc(mix),
                b.us_per_query
            );
        }
    }
    // The legend.
    for (si, server) in servers.iter().enumerate() {
        let ly = top + 10.0 + si as f64 * 18.0;
        let lx = left + plot_w + 20.0;
        let _ = writeln!(
            s,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\n<text x=\"{:.1}\" \
                y=\"{ly:.1}\">{}</text>",
            ly - 10.0,
            PALETTE[si % PALETTE.len()],
            lx + 18.0,
            esc(server)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_tick(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The failover timeline: one dot per polled answer, in the lane of the
/// target it named (lanes in the order first seen, then "no answer"),
/// against milliseconds since the promote request; dashed lines mark the
/// promote and `marks`.
pub fn failover(polls: &[Poll], marks: &Marks, title: &str) -> String {
    let mut lanes: Vec<String> = Vec::new();
    for p in polls {
        let l = p.target.clone().unwrap_or_else(|| "no answer".into());
        if !lanes.contains(&l) {
            lanes.push(l);
        }
    }
    if let Some(i) = lanes.iter().position(|l| l == "no answer") {
        let l = lanes.remove(i);
        lanes.push(l);
    }
    let (left, right, top, bottom) = (110.0, 30.0, 40.0, 60.0);
    let lane_h = 40.0;
    let plot_w = 640.0;
    let plot_h = lane_h * lanes.len().max(1) as f64;
    let (w, h) = (left + plot_w + right, top + plot_h + bottom + 30.0);
    let ms: Vec<f64> = polls.iter().map(|p| p.t * 1e3).filter(|t| t.is_finite()).collect();
    let mut lo = ms.iter().copied().fold(0.0, f64::min);
    let mut hi = ms.iter().copied().fold(0.0, f64::max);
    for m in [marks.pg_ready, marks.switched, marks.followed].into_iter().flatten() {
        hi = hi.max(m * 1e3);
    }
    if hi - lo < 1.0 {
        lo -= 1.0;
        hi += 1.0;
    }
    let x = |t_ms: f64| left + (t_ms - lo) / (hi - lo) * plot_w;
    let lane_y = |i: usize| top + lane_h * i as f64 + lane_h / 2.0;
    let mut s = String::new();
    header(&mut s, w, h, title);
    for (i, l) in lanes.iter().enumerate() {
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\n<text x=\"{:.1}\" \
                y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + plot_w,
            left - 8.0,
            lane_y(i) + 4.0,
            esc(l),
            yy = lane_y(i),
        );
    }
    // The time axis with about six ticks.
    let (span, step) = nice_max((hi - lo) / 5.0);
    let step = if span > 0.0 { step * 5.0 } else { 1.0 };
    let base = top + plot_h;
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" stroke=\"black\"/>",
        left + plot_w
    );
    let mut t = (lo / step).ceil() * step;
    while t <= hi + 1e-9 {
        let _ = writeln!(
            s,
            "<line x1=\"{xx:.1}\" y1=\"{base:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n<text x=\"{xx:.1}\" \
                y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            base + 5.0,
            base + 18.0,
            fmt_tick(t),
            xx = x(t),
        );
        t += step;
    }
    let _ = writeln!(
        s,
        "<text class=\"axis-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">ms since the promote request</text>",
        left + plot_w / 2.0,
        base + 38.0
    );
    let _ = writeln!(
        s,
        "<text class=\"axis-label\" x=\"14\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {:.1})\">\
            alias answer names</text>",
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    // The marks.
    let mut mark = |at: f64, label: &str, colour: &str, row: usize| {
        let xx = x(at * 1e3);
        let _ = writeln!(
            s,
            "<line class=\"mark\" x1=\"{xx:.1}\" y1=\"{top}\" x2=\"{xx:.1}\" y2=\"{base:.1}\" stroke=\"{colour}\" \
                stroke-dasharray=\"4 3\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
            xx + 3.0,
            h - 22.0 + row as f64 * 13.0 - 13.0,
            esc(label)
        );
    };
    mark(0.0, "promote", "#555", 0);
    if let Some(t) = marks.pg_ready {
        mark(t, &format!("PostgreSQL ready {:.0} ms", t * 1e3), "#59a14f", 1);
    }
    if let Some(t) = marks.switched {
        mark(t, &format!("sidecar switched {:.0} ms", t * 1e3), "#e15759", 2);
    }
    // The answers.
    for p in polls {
        if !p.t.is_finite() {
            continue;
        }
        let l = p.target.clone().unwrap_or_else(|| "no answer".into());
        let i = lanes.iter().position(|x| *x == l).expect("every lane was added");
        let _ = writeln!(
            s,
            "<circle class=\"answer\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"/>",
            x(p.t * 1e3),
            lane_y(i),
            PALETTE[i % PALETTE.len()]
        );
    }
    if let Some(t) = marks.followed {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">first answer naming the new target: {:.0} ms</text>",
            left,
            top - 6.0,
            t * 1e3
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small XML well-formedness check (what the SVGs use: elements,
    /// attributes in double quotes, text, the five entities, no comments or
    /// CDATA): every tag closed in order, attribute values quoted and
    /// without `<` or a bare `&`, one root. Returns the elements in
    /// document order (name, attributes).
    /// An element: its name and attributes.
    type Element = (String, Vec<(String, String)>);

    fn parse(xml: &str) -> Result<Vec<Element>, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = Vec::new();
        let mut roots = 0;
        let mut rest = xml.trim();
        let text_ok = |t: &str| -> Result<(), String> {
            let mut r = t;
            while let Some(i) = r.find('&') {
                let after = &r[i + 1..];
                let end = after.find(';').ok_or(format!("bare & in {t:?}"))?;
                if !["amp", "lt", "gt", "quot", "apos"].contains(&&after[..end]) {
                    return Err(format!("unknown entity in {t:?}"));
                }
                r = &after[end + 1..];
            }
            if t.contains('>') {
                return Err(format!("bare > in {t:?}"));
            }
            Ok(())
        };
        while !rest.is_empty() {
            let Some(open) = rest.find('<') else {
                text_ok(rest)?;
                if !stack.is_empty() || !rest.trim().is_empty() {
                    return Err("text after the root".into());
                }
                break;
            };
            text_ok(&rest[..open])?;
            if stack.is_empty() && !rest[..open].trim().is_empty() {
                return Err("text outside the root".into());
            }
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match stack.pop() {
                    Some(top) if top == name.trim() => continue,
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, mut attrs_text) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':') {
                return Err(format!("bad element name {name:?}"));
            }
            let mut attrs = Vec::new();
            loop {
                attrs_text = attrs_text.trim_start();
                if attrs_text.is_empty() {
                    break;
                }
                let eq = attrs_text.find("=\"").ok_or(format!("unquoted attribute in <{tag}>"))?;
                let key = &attrs_text[..eq];
                if key.is_empty() || key.contains(char::is_whitespace) {
                    return Err(format!("bad attribute in <{tag}>"));
                }
                let val_end = attrs_text[eq + 2..].find('"').ok_or("unterminated value")? + eq + 2;
                let val = &attrs_text[eq + 2..val_end];
                if val.contains('<') {
                    return Err(format!("< in attribute {key}"));
                }
                text_ok(val)?;
                if attrs.iter().any(|(k, _): &(String, String)| k == key) {
                    return Err(format!("duplicate attribute {key}"));
                }
                attrs.push((key.to_string(), val.to_string()));
                attrs_text = &attrs_text[val_end + 1..];
            }
            if stack.is_empty() {
                roots += 1;
            }
            elements.push((name.to_string(), attrs));
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} roots"));
        }
        Ok(elements)
    }

    fn attr<'a>(e: &'a Element, k: &str) -> Option<&'a str> {
        e.1.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_checker_rejects_what_is_not_well_formed() {
        assert!(parse("<svg><rect/></svg>").is_ok());
        for bad in [
            "<svg><rect></svg>",
            "<svg>a & b</svg>",
            "<svg x=1></svg>",
            "<svg></svg><svg></svg>",
            "<svg><g></svg></g>",
            "<svg x=\"<\"></svg>",
            "<svg>",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_bar_per_server_and_mix_with_axis_labels() {
        let mut bars = Vec::new();
        for mix in ["a", "b", "d", "f <&> \"zones\""] {
            for (i, server) in ["knot", "sidecar", "dnsdist-cache"].into_iter().enumerate() {
                bars.push(Bar {
                    mix: mix.into(),
                    server: server.into(),
                    us_per_query: 3.0 + i as f64 * 4.5,
                });
            }
        }
        bars.push(Bar {
            mix: "e".into(),
            server: "knot".into(),
            us_per_query: f64::NAN,
        });
        let svg = cpu(&bars, "CPU per query");
        let els = parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(els[0].0, "svg");
        assert_eq!(attr(&els[0], "xmlns"), Some("http://www.w3.org/2000/svg"));
        let rects: Vec<_> = els
            .iter()
            .filter(|e| e.0 == "rect" && attr(e, "class") == Some("bar"))
            .collect();
        assert_eq!(rects.len(), 12, "4 mixes x 3 servers; the NaN bar is left out");
        // Taller for more CPU: knot's 3 µs bar is a quarter of dnsdist-cache's 12.
        let height = |i: usize| attr(rects[i], "height").unwrap().parse::<f64>().unwrap();
        assert!(
            (height(2) / height(0) - 4.0).abs() < 0.05,
            "{} {}",
            height(0),
            height(2)
        );
        assert!(svg.contains(">server CPU µs per query</text>") && svg.contains(">mix</text>"));
        for name in ["knot", "sidecar", "dnsdist-cache", "f &lt;&amp;&gt; &quot;zones&quot;"] {
            assert!(svg.contains(&format!(">{name}</text>")), "{name} labelled");
        }
        // Any set of mixes, even none.
        parse(&cpu(&[], "empty")).unwrap();
    }

    #[test]
    fn the_failover_chart_puts_each_answer_in_its_targets_lane() {
        let mut polls = Vec::new();
        for i in 0..100 {
            let t = -0.2 + i as f64 * 0.005;
            let target = match t {
                t if t < 0.03 => Some("pg-a.test.".to_string()),
                t if t < 0.04 => None,
                _ => Some("pg-b.test.".to_string()),
            };
            polls.push(Poll { t, target });
        }
        let marks = Marks {
            pg_ready: Some(0.025),
            switched: Some(0.031),
            followed: Some(0.04),
        };
        let svg = failover(&polls, &marks, "Failover");
        let els = parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        let dots: Vec<_> = els
            .iter()
            .filter(|e| e.0 == "circle" && attr(e, "class") == Some("answer"))
            .collect();
        assert_eq!(dots.len(), 100);
        let cy = |i: usize| attr(dots[i], "cy").unwrap().to_string();
        let cx = |i: usize| attr(dots[i], "cx").unwrap().parse::<f64>().unwrap();
        assert_eq!(cy(0), cy(40), "pg-a before the promote");
        assert_ne!(cy(0), cy(99), "pg-b after");
        assert!(cx(99) > cx(0), "time runs left to right");
        assert_eq!(els.iter().filter(|e| attr(e, "class") == Some("mark")).count(), 3);
        for needle in [
            ">pg-a.test.</text>",
            ">pg-b.test.</text>",
            ">no answer</text>",
            "ms since the promote request",
            "alias answer names",
        ] {
            assert!(svg.contains(needle), "{needle}");
        }
        parse(&failover(
            &[],
            &Marks {
                pg_ready: None,
                switched: None,
                followed: None,
            },
            "none",
        ))
        .unwrap();
    }
}
