//! Reference values from scikit-learn, PyTorch and a NumPy/SciPy
//! implementation of the MVTec AD AU-PRO definition
//! (`scripts/make_fixtures.py`; outputs committed in `tests/fixtures/`).

use std::collections::BTreeMap;

use diffad_metrics::{
    aupro, auroc, average_precision, classification_metrics, f1_max, image_score, Evaluator,
    ImageMetrics, PixelMetrics, GOOD,
};
use serde::Deserialize;

const TOL: f64 = 1e-9;

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn close(what: &str, got: f64, expected: f64) {
    assert!(
        (got - expected).abs() <= TOL,
        "{what}: got {got}, scikit-learn/reference {expected}"
    );
}

fn flags(values: &[u8]) -> Vec<bool> {
    values.iter().map(|&v| v != 0).collect()
}

#[derive(Deserialize)]
struct ClassificationCase {
    name: String,
    scores: Vec<f32>,
    labels: Vec<u8>,
    auroc: f64,
    average_precision: f64,
    f1: f64,
    f1_threshold: f32,
    f1_unique: bool,
}

#[test]
fn classification_matches_scikit_learn() {
    let cases: Vec<ClassificationCase> = load("classification.json");
    assert!(cases.len() >= 10);
    for case in cases {
        let labels = flags(&case.labels);
        let name = &case.name;
        close(
            &format!("{name} auroc"),
            auroc(&case.scores, &labels).unwrap(),
            case.auroc,
        );
        close(
            &format!("{name} AP"),
            average_precision(&case.scores, &labels).unwrap(),
            case.average_precision,
        );
        let best = f1_max(&case.scores, &labels).unwrap();
        close(&format!("{name} f1"), best.f1, case.f1);
        if case.f1_unique {
            assert_eq!(best.threshold, case.f1_threshold, "{name} f1 threshold");
        }
        let all = classification_metrics(&case.scores, &labels).unwrap();
        assert_eq!(all.auroc, auroc(&case.scores, &labels).unwrap());
        // Streaming per-image accumulation gives the same numbers.
        let mut images = ImageMetrics::new();
        for (&s, &l) in case.scores.iter().zip(&labels) {
            images.push(s, l).unwrap();
        }
        let report = images.finish().unwrap();
        close(&format!("{name} streamed auroc"), report.auroc, case.auroc);
        close(
            &format!("{name} streamed AP"),
            report.average_precision,
            case.average_precision,
        );
    }
}

#[derive(Deserialize)]
struct AuproCase {
    name: String,
    width: usize,
    height: usize,
    maps: Vec<Vec<f32>>,
    masks: Vec<Vec<u8>>,
    fpr_limits: Vec<f64>,
    aupro: Vec<f64>,
    auroc: f64,
    average_precision: f64,
    f1: f64,
    f1_threshold: f32,
    f1_unique: bool,
}

#[test]
fn aupro_matches_mvtec_definition() {
    let cases: Vec<AuproCase> = load("aupro.json");
    assert!(cases.iter().any(|c| c.name == "diagonal_regions"));
    for case in cases {
        let masks: Vec<Vec<bool>> = case.masks.iter().map(|m| flags(m)).collect();
        let map_refs: Vec<&[f32]> = case.maps.iter().map(Vec::as_slice).collect();
        let mask_refs: Vec<&[bool]> = masks.iter().map(Vec::as_slice).collect();
        for (&limit, &expected) in case.fpr_limits.iter().zip(&case.aupro) {
            let got = aupro(&map_refs, &mask_refs, case.width, case.height, limit).unwrap();
            close(&format!("{} aupro@{limit}", case.name), got, expected);

            let mut pixels = PixelMetrics::with_fpr_limit(limit).unwrap();
            for (map, mask) in map_refs.iter().zip(&mask_refs) {
                pixels.update(map, mask, case.width, case.height).unwrap();
            }
            let report = pixels.finish().unwrap();
            let name = &case.name;
            close(
                &format!("{name} streamed aupro@{limit}"),
                report.aupro,
                expected,
            );
            close(&format!("{name} pixel auroc"), report.auroc, case.auroc);
            close(
                &format!("{name} pixel AP"),
                report.average_precision,
                case.average_precision,
            );
            close(&format!("{name} pixel f1"), report.f1_max.f1, case.f1);
            if case.f1_unique {
                assert_eq!(report.f1_max.threshold, case.f1_threshold, "{name}");
            }
            assert!(report.per_defect.is_empty());
        }
    }
}

#[derive(Deserialize)]
struct ImageScoreCase {
    name: String,
    width: usize,
    height: usize,
    map: Vec<f32>,
    kernels: Vec<usize>,
    scores: Vec<f32>,
}

#[test]
fn image_score_matches_torch_avg_pool2d() {
    let cases: Vec<ImageScoreCase> = load("image_score.json");
    for case in cases {
        for (&k, &expected) in case.kernels.iter().zip(&case.scores) {
            let got = image_score(&case.map, case.width, case.height, k).unwrap();
            // PyTorch sums in f32; we sum in f64.
            assert!(
                (got - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{} k={k}: got {got}, torch {expected}",
                case.name
            );
        }
    }
}

#[derive(Deserialize)]
struct BinaryRef {
    auroc: f64,
    average_precision: f64,
    f1: f64,
    f1_threshold: f32,
    f1_unique: bool,
}

#[derive(Deserialize)]
struct PixelRef {
    auroc: f64,
    average_precision: f64,
    f1: f64,
    aupro: Vec<f64>,
}

#[derive(Deserialize)]
struct DefectRef {
    image: BinaryRef,
    pixel: PixelRef,
}

#[derive(Deserialize)]
struct EvaluatorCase {
    width: usize,
    height: usize,
    kernel: usize,
    defect_types: Vec<String>,
    maps: Vec<Vec<f32>>,
    masks: Vec<Vec<u8>>,
    image_scores: Vec<f32>,
    image: BinaryRef,
    pixel: PixelRef,
    per_defect: BTreeMap<String, DefectRef>,
}

#[test]
fn evaluator_report_matches_reference_per_defect_type() {
    let case: EvaluatorCase = load("evaluator.json");
    let mut eval = Evaluator::with_options(case.kernel, 0.3).unwrap();
    for (i, (defect, (map, mask))) in case
        .defect_types
        .iter()
        .zip(case.maps.iter().zip(&case.masks))
        .enumerate()
    {
        let score = eval
            .add(defect, map, &flags(mask), case.width, case.height)
            .unwrap();
        let expected = case.image_scores[i];
        assert!(
            (score - expected).abs() <= 1e-6,
            "image {i}: {score} vs torch {expected}"
        );
    }
    let report = eval.finish().unwrap();
    // Image scores agree with torch to ~1 ulp, not bit for bit, so the image
    // metrics are compared loosely only where a near-tie could flip an order.
    close("image auroc", report.image.auroc, case.image.auroc);
    close(
        "image AP",
        report.image.average_precision,
        case.image.average_precision,
    );
    close("image f1", report.image.f1_max.f1, case.image.f1);
    if case.image.f1_unique {
        assert!((report.image.f1_max.threshold - case.image.f1_threshold).abs() <= 1e-6);
    }
    close("pixel auroc", report.pixel.auroc, case.pixel.auroc);
    close(
        "pixel AP",
        report.pixel.average_precision,
        case.pixel.average_precision,
    );
    close("pixel f1", report.pixel.f1_max.f1, case.pixel.f1);
    close("aupro", report.pixel.aupro, case.pixel.aupro[0]);
    assert_eq!(report.pixel.images, case.maps.len());
    let types: Vec<&String> = report.image.per_defect.keys().collect();
    assert_eq!(types, ["crack", "hole"]);
    assert!(!report.pixel.per_defect.contains_key(GOOD));
    for (defect, expected) in &case.per_defect {
        let image = &report.image.per_defect[defect];
        let pixel = &report.pixel.per_defect[defect];
        close(
            &format!("{defect} image auroc"),
            image.auroc.unwrap(),
            expected.image.auroc,
        );
        close(
            &format!("{defect} image AP"),
            image.average_precision.unwrap(),
            expected.image.average_precision,
        );
        close(
            &format!("{defect} pixel auroc"),
            pixel.auroc.unwrap(),
            expected.pixel.auroc,
        );
        close(
            &format!("{defect} pixel AP"),
            pixel.average_precision.unwrap(),
            expected.pixel.average_precision,
        );
        close(
            &format!("{defect} pixel f1"),
            pixel.f1_max.unwrap().f1,
            expected.pixel.f1,
        );
        close(
            &format!("{defect} aupro"),
            pixel.aupro.unwrap(),
            expected.pixel.aupro[0],
        );
    }
    // JSON round trip.
    let json = report.to_json().unwrap();
    let back: diffad_metrics::Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
    let dir = std::env::temp_dir().join(format!("diffad-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("report.json");
    report.write_json(&path).unwrap();
    let written: diffad_metrics::Report =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(written, report);
    assert!(!dir.join("report.json.tmp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
