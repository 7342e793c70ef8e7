//! `diffad::speed` on the micro configuration, one timed call per figure, on
//! the CPU: every figure is there, positive and finite, and the report
//! survives a JSON round trip. (The timings themselves are benchmarks: see
//! `docs/gpu.md`; nothing here asserts a speed.)

mod common;

use candle_core::Device;
use diffad::config::Precision;
use diffad::speed::{
    measure_speed, random_run, write_diffusers_configs, SpeedOptions, SpeedReport, BATCH,
    DDIM_RECONSTRUCTION, PREDICT, UNET_FORWARD,
};
use diffad::Stage;

#[test]
fn speed_report_has_every_figure_and_round_trips_through_json() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::micro_config();
    let options = SpeedOptions { warmup: 0, reps: 1 };
    let report = measure_speed(
        &config,
        &dir.path().join("run"),
        &Device::Cpu,
        Precision::F32,
        &options,
    )
    .unwrap();

    let expected = [
        (UNET_FORWARD, 1),
        (UNET_FORWARD, BATCH),
        (DDIM_RECONSTRUCTION, BATCH),
        (PREDICT, BATCH),
    ];
    let got: Vec<(&str, usize)> = report
        .measurements
        .iter()
        .map(|m| (m.name.as_str(), m.batch))
        .collect();
    assert_eq!(got, expected);
    for m in &report.measurements {
        assert!(m.seconds.is_finite() && m.seconds > 0.0, "{m:?}");
        assert!(
            m.images_per_second.is_finite() && m.images_per_second > 0.0,
            "{m:?}"
        );
        let rate = m.batch as f64 / m.seconds;
        assert!((m.images_per_second - rate).abs() <= 1e-9 * rate, "{m:?}");
    }
    assert_eq!(report.device, "cpu");
    assert_eq!(report.precision, Precision::F32);
    assert_eq!(
        (report.image_size, report.latent_size),
        (32, config.latent_size())
    );
    assert_eq!(report.ddim_steps, config.inference.ddim_steps);

    let path = dir.path().join("speed.json");
    report.write_json(&path).unwrap();
    assert_eq!(SpeedReport::from_json_file(&path).unwrap(), report);
    let table = report.to_string();
    assert_eq!(table.lines().filter(|l| l.starts_with("| ")).count(), 5);
    assert!(table.contains(&format!(
        "DDIM-{} reconstruction",
        config.inference.ddim_steps
    )));
}

#[test]
fn random_run_is_reopened_without_redrawing_and_configs_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::micro_config();
    let root = dir.path().join("run");
    let run = random_run(&root, &config, &Device::Cpu).unwrap();
    let unet = std::fs::read(run.weights(Stage::Ldm)).unwrap();
    std::fs::remove_file(run.weights(Stage::Segmenter)).unwrap();
    let again = random_run(&root, &config, &Device::Cpu).unwrap();
    assert_eq!(std::fs::read(again.weights(Stage::Ldm)).unwrap(), unet);
    assert!(again.weights(Stage::Segmenter).is_file());

    let out = dir.path().join("configs");
    write_diffusers_configs(&config, &out).unwrap();
    for file in [
        "vae/config.json",
        "unet/config.json",
        "scheduler/scheduler_config.json",
    ] {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(json.get("_class_name").is_some(), "{file}: {text}");
    }
    let toml = std::fs::read_to_string(out.join(diffad::speed::CONFIG_TOML)).unwrap();
    assert_eq!(
        diffad::Config::from_toml_str(&toml, "diffad.toml").unwrap(),
        config
    );
}
