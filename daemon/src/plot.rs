//! DET curves as a self-contained SVG (no plotting dependency): miss rate against false
//! alarm rate on normal-deviate axes, one line per detector.

use std::fmt::Write;

use habitus_engine::eval::EvalReport;

/// Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9).
fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    if p < 0.02425 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p > 1.0 - 0.02425 {
        -probit(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// Renders every detector's DET curve.
pub fn det_svg(report: &EvalReport) -> String {
    let (w, h, margin) = (640.0, 560.0, 70.0);
    let lo = probit(0.001);
    let hi = probit(0.6);
    let sx = |p: f64| margin + (probit(p.clamp(0.001, 0.6)) - lo) / (hi - lo) * (w - 2.0 * margin);
    let sy =
        |p: f64| h - margin - (probit(p.clamp(0.001, 0.6)) - lo) / (hi - lo) * (h - 2.0 * margin);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">DET — {}</text>"#,
        w / 2.0,
        escape(&report.dataset)
    );
    for &t in &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6] {
        let (x, y) = (sx(t), sy(t));
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
            margin,
            h - margin
        );
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            margin,
            w - margin
        );
        let label = format!("{}", t * 100.0);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            h - margin + 16.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            margin - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">false alarm rate (%) — genuine attempts rejected</text>"#,
        w / 2.0,
        h - 24.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {}) rotate(-90)" text-anchor="middle">miss rate (%) — impostors accepted</text>"#,
        h / 2.0
    );
    for (i, r) in report.results.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        // A DET over many scores has far more points than pixels: keep a point only when
        // it moves at least half a pixel from the last one kept (and always the last), so
        // the picture is the same and the file stays small.
        let mut points: Vec<String> = Vec::new();
        let mut kept: Option<(f64, f64)> = None;
        for (k, &(fa, miss)) in r.det.iter().enumerate() {
            let p = (sx(fa), sy(miss));
            let last = k + 1 == r.det.len();
            if let Some(q) = kept {
                if !last && (p.0 - q.0).abs() < 0.5 && (p.1 - q.1).abs() < 0.5 {
                    continue;
                }
            }
            points.push(format!("{:.1},{:.1}", p.0, p.1));
            kept = Some(p);
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"/>"#,
            points.join(" ")
        );
        let ly = margin + 8.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/>"#,
            w - margin - 210.0,
            w - margin - 190.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{} (EER {:.2} %)</text>"#,
            w - margin - 185.0,
            ly + 4.0,
            escape(&r.detector),
            r.eer_mean * 100.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probit_is_the_normal_quantile() {
        assert!(probit(0.5).abs() < 1e-9);
        assert!((probit(0.975) - 1.959964).abs() < 1e-5);
        assert!((probit(0.001) + 3.090232).abs() < 1e-5);
    }

    #[test]
    fn dense_curves_are_thinned_to_what_can_be_seen() {
        // 200,000 points along a DET: the polyline keeps a few hundred, and both ends.
        let det: Vec<(f64, f64)> = (0..=200_000)
            .map(|i| {
                let fa = i as f64 / 200_000.0;
                (fa, (1.0 - fa).powi(3))
            })
            .collect();
        let report = EvalReport {
            dataset: "synthetic".into(),
            protocol: String::new(),
            results: vec![habitus_engine::eval::DetectorResult {
                detector: "d".into(),
                variant: String::new(),
                eer_mean: 0.1,
                eer_sd: 0.0,
                zero_miss_far_mean: 0.0,
                zero_miss_far_sd: 0.0,
                subjects: 1,
                gallery: None,
                per_subject_eer: Vec::new(),
                det,
            }],
            notes: Vec::new(),
        };
        let svg = det_svg(&report);
        let line = svg
            .lines()
            .find(|l| l.starts_with("<polyline"))
            .expect("polyline");
        let kept = line.matches(',').count();
        assert!((2..2_000).contains(&kept), "{kept} points kept");
        assert!(svg.len() < 100_000, "{} bytes", svg.len());
        // The first and the last point survive thinning.
        assert!(line.contains("points=\"70.0,70.0 "), "{line}");
        assert!(line.contains(" 570.0,490.0\""), "{line}");
    }
}
