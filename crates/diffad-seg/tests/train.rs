//! Training: schedule, learning on synthetic anomalies, checkpoints and resume.

use candle_core::{Device, Tensor};
use diffad_seg::{
    anomaly_map, image_scores, DiscriminativeUNetConfig, Error, ReconstructionSource, SegBatch,
    SegInput, SegSample, SegTrainConfig, SegTrainer, Silent,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SIZE: usize = 32;

/// Synthetic surfaces: a smooth random texture; anomalous samples get a
/// rectangle of a different (striped, brighter) texture. The "reconstruction"
/// is the clean texture, `x_inter` the mean of both. Every sample is drawn
/// from an RNG seeded by (seed, epoch, index).
struct Synthetic {
    len: usize,
    seed: u64,
    /// Return a NaN image for this index.
    poison: Option<usize>,
}

fn draw(seed: u64, epoch: usize, index: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(
        seed ^ ((epoch as u64) << 32) ^ (index as u64).wrapping_mul(0x9e37_79b9),
    );
    let n = SIZE * SIZE;
    let (fx, fy, phase) = (
        rng.random_range(0.2..0.6f32),
        rng.random_range(0.2..0.6f32),
        rng.random_range(0.0..std::f32::consts::TAU),
    );
    let mut clean = vec![0f32; 3 * n];
    for c in 0..3 {
        for y in 0..SIZE {
            for x in 0..SIZE {
                let v = 0.5
                    + 0.2 * ((fx * x as f32 + fy * y as f32 + phase + c as f32).sin())
                    + rng.random_range(-0.05..0.05);
                clean[c * n + y * SIZE + x] = v;
            }
        }
    }
    let mut anomalous = clean.clone();
    let mut mask = vec![0f32; n];
    if rng.random_bool(0.75) {
        let (w, h) = (rng.random_range(4..12), rng.random_range(4..12));
        let (x0, y0) = (rng.random_range(0..SIZE - w), rng.random_range(0..SIZE - h));
        let shift = rng.random_range(0.25..0.5f32);
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                mask[y * SIZE + x] = 1.0;
                for c in 0..3 {
                    let stripe = if (x + y) % 4 < 2 { shift } else { -shift / 2.0 };
                    anomalous[c * n + y * SIZE + x] += stripe;
                }
            }
        }
    }
    (anomalous, clean, mask)
}

impl ReconstructionSource for Synthetic {
    fn len(&self) -> usize {
        self.len
    }

    fn sample(&mut self, epoch: usize, index: usize) -> diffad_seg::Result<SegSample> {
        let (mut a, r, m) = draw(self.seed, epoch, index);
        if self.poison == Some(index) {
            a[0] = f32::NAN;
        }
        let dev = Device::Cpu;
        let x_a = Tensor::from_vec(a, (3, SIZE, SIZE), &dev)?;
        let x_r = Tensor::from_vec(r, (3, SIZE, SIZE), &dev)?;
        let x_inter = ((&x_a + &x_r)? * 0.5)?;
        Ok(SegSample {
            x_a,
            x_r,
            x_inter: Some(x_inter),
            mask: Tensor::from_vec(m, (1, SIZE, SIZE), &dev)?,
        })
    }
}

fn config(epochs: usize) -> SegTrainConfig {
    SegTrainConfig {
        epochs,
        batch_size: 4,
        seed: 3,
        ..SegTrainConfig::default()
    }
}

#[test]
fn multistep_schedule_matches_draem_milestones() {
    let s = diffad_nn::optim::MultiStepLr::from_fractions(1e-3, 700, &[0.8, 0.9], 0.2);
    assert_eq!(s.milestones, vec![560, 630]);
    assert_eq!(s.lr_at(0), 1e-3);
    assert_eq!(s.lr_at(559), 1e-3);
    assert!((s.lr_at(560) - 2e-4).abs() < 1e-15);
    assert!((s.lr_at(629) - 2e-4).abs() < 1e-15);
    assert!((s.lr_at(630) - 4e-5).abs() < 1e-15);
    assert!((s.lr_at(699) - 4e-5).abs() < 1e-15);
    let s = diffad_nn::optim::MultiStepLr::from_fractions(1e-3, 15, &[0.8, 0.9], 0.2);
    assert_eq!(s.milestones, vec![12, 14]);
    assert_eq!(
        SegTrainConfig::default().schedule().milestones,
        vec![560, 630]
    );
}

#[test]
fn tiny_segmenter_learns_synthetic_anomalies() {
    let dev = Device::Cpu;
    let unet = DiscriminativeUNetConfig::new(SegInput::default().in_channels(3), 4);
    let mut trainer = SegTrainer::new(unet, config(15), &dev).unwrap();
    let mut source = Synthetic {
        len: 16,
        seed: 11,
        poison: None,
    };
    let report = trainer.train(&mut source, &mut Silent).unwrap();
    let losses = &report.epoch_losses;
    assert_eq!(losses.len(), 15);
    let first = losses[0];
    let last = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < 0.5 * first, "loss did not fall enough: {losses:?}");

    // Held-out samples (another seed), BatchNorm in evaluation mode.
    let mut held_out = Synthetic {
        len: 8,
        seed: 999,
        poison: None,
    };
    let samples: Vec<SegSample> = (0..8).map(|i| held_out.sample(0, i).unwrap()).collect();
    let batch = SegBatch::stack(&samples).unwrap();
    let logits = trainer
        .model()
        .forward(&batch.input(&SegInput::default()).unwrap())
        .unwrap();
    let map = anomaly_map(&logits).unwrap();
    let scores = map.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let labels: Vec<bool> = batch
        .mask
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|m| *m > 0.5)
        .collect();
    let auroc = diffad_metrics::auroc(&scores, &labels).unwrap();
    assert!(auroc > 0.9, "pixel AUROC on held-out samples {auroc}");
    assert_eq!(image_scores(&map).unwrap().len(), 8);
}

#[test]
fn checkpoint_resume_reproduces_uninterrupted_training() {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let unet = DiscriminativeUNetConfig::new(9, 2);
    let source = || Synthetic {
        len: 6,
        seed: 5,
        poison: None,
    };

    // Uninterrupted: 3 epochs.
    let mut straight = SegTrainer::new(unet, config(3), &dev).unwrap();
    let report = straight.train(&mut source(), &mut Silent).unwrap();

    // Interrupted after 2 epochs, resumed for the third.
    let ckpt = dir.path().join("seg.ckpt.safetensors");
    let mut first = SegTrainer::new(
        unet,
        SegTrainConfig {
            checkpoint: Some(ckpt.clone()),
            ..config(2)
        },
        &dev,
    )
    .unwrap();
    first.train(&mut source(), &mut Silent).unwrap();
    assert!(ckpt.exists());
    assert!(!dir.path().join("seg.ckpt.safetensors.tmp").exists());
    let mut resumed = SegTrainer::resume(&ckpt, Some(config(3)), &dev).unwrap();
    assert_eq!(resumed.epoch(), 2);
    assert_eq!(resumed.step(), 4);
    assert_eq!(resumed.optimizer().step_count(), 4);
    // Without settings, the saved ones are used.
    let stored = SegTrainer::resume(&ckpt, None, &dev).unwrap();
    assert_eq!(stored.config(), first.config());
    assert_eq!(stored.step(), 4);
    let resumed_report = resumed.train(&mut source(), &mut Silent).unwrap();
    assert_eq!(resumed_report.epoch_losses, report.epoch_losses);

    let a = straight.varmap().data().lock().unwrap();
    let b = resumed.varmap().data().lock().unwrap();
    for (name, var) in a.iter() {
        let d = (var.as_tensor() - b[name].as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{name} differs after resume");
    }
    drop((a, b));

    // The checkpoint doubles as a plain weights file.
    let net = diffad_seg::DiscriminativeUNet::load(unet, &ckpt, &dev).unwrap();
    assert_eq!(net.config(), &unet);
}

#[test]
fn training_errors_are_typed() {
    let dev = Device::Cpu;
    let unet = DiscriminativeUNetConfig::new(9, 2);
    let mut trainer = SegTrainer::new(unet, config(1), &dev).unwrap();
    let mut empty = Synthetic {
        len: 0,
        seed: 0,
        poison: None,
    };
    assert!(matches!(
        trainer.train(&mut empty, &mut Silent),
        Err(Error::EmptySource)
    ));
    let mut poisoned = Synthetic {
        len: 4,
        seed: 0,
        poison: Some(2),
    };
    let r = trainer.train(&mut poisoned, &mut Silent);
    assert!(matches!(r, Err(Error::NonFinite(_))), "{:?}", r);
    assert!(matches!(
        SegTrainer::new(
            unet,
            SegTrainConfig {
                batch_size: 0,
                ..config(1)
            },
            &dev
        ),
        Err(Error::Config(_))
    ));

    let dir = tempfile::tempdir().unwrap();
    // A weights-only file is not a trainer checkpoint.
    let weights = dir.path().join("weights.safetensors");
    diffad_seg::DiscriminativeUNet::save(trainer.varmap(), &weights).unwrap();
    assert!(matches!(
        SegTrainer::resume(&weights, Some(config(2)), &dev),
        Err(Error::Checkpoint { .. })
    ));
    let junk = dir.path().join("junk");
    std::fs::write(&junk, [0u8; 3]).unwrap();
    assert!(matches!(
        SegTrainer::resume(&junk, Some(config(2)), &dev),
        Err(Error::Nn(diffad_nn::Error::Checkpoint { .. }))
    ));
}
