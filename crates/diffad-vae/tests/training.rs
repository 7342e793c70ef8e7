//! Training: gradients reach every parameter, the loss falls, the discriminator switches
//! on at its step, and a resumed run continues exactly as an uninterrupted one.

use candle_core::{DType, Device, Tensor};
use diffad_vae::synthetic::synthetic_images;
use diffad_vae::train::DiscriminatorTrainConfig;
use diffad_vae::{
    AdamWConfig, AutoencoderKl, AutoencoderKlConfig, Error, PatchGanConfig, Silent, VaeTrainConfig,
    VaeTrainer,
};

fn tiny_gan() -> DiscriminatorTrainConfig {
    DiscriminatorTrainConfig {
        patch_gan: PatchGanConfig {
            in_channels: 3,
            ndf: 8,
            n_layers: 2,
        },
        start_step: 1,
        weight: 0.5,
        optimizer: AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        },
    }
}

fn train_config(steps: u64) -> VaeTrainConfig {
    VaeTrainConfig {
        steps,
        batch_size: 2,
        optimizer: AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        },
        warmup_steps: 2,
        max_grad_norm: Some(1e4),
        discriminator: None,
        checkpoint_every: 2,
        seed: 5,
        ..VaeTrainConfig::default()
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn every_parameter_receives_a_gradient() {
    let dev = Device::Cpu;
    let vae = AutoencoderKl::new(AutoencoderKlConfig::tiny(), 1, &dev).unwrap();
    let trainer = VaeTrainer::new(vae, train_config(1)).unwrap();
    let x = synthetic_images(2, 16, 0, &dev)
        .unwrap()
        .affine(2.0, -1.0)
        .unwrap();
    let noise = Tensor::randn(0f32, 1f32, (2, 4, 8, 8), &dev).unwrap();
    let terms = trainer.losses(&x, Some(&noise), true).unwrap();
    let missing =
        diffad_nn::testing::params_without_gradient(trainer.vae().varmap(), &terms.total).unwrap();
    assert!(missing.is_empty(), "no gradient for {missing:?}");
    assert!(trainer.vae().num_parameters() > 100_000);
}

#[test]
fn every_discriminator_parameter_receives_a_gradient() {
    let dev = Device::Cpu;
    let gan = diffad_vae::PatchGan::new(tiny_gan().patch_gan, 0, &dev).unwrap();
    let real = synthetic_images(2, 16, 0, &dev).unwrap();
    let fake = synthetic_images(2, 16, 9, &dev).unwrap();
    let logits_fake = gan.forward_t(&fake, true).unwrap();
    let d_loss =
        diffad_vae::loss::hinge_d_loss(&gan.forward_t(&real, true).unwrap(), &logits_fake).unwrap();
    // With logits near 0 the hinge loss's gradient on the last bias is exactly
    // (#fake − #real)/N = 0, so add the generator term, which moves it.
    let loss = (d_loss + diffad_vae::loss::generator_loss(&logits_fake).unwrap()).unwrap();
    let missing = diffad_nn::testing::params_without_gradient(gan.varmap(), &loss).unwrap();
    assert!(missing.is_empty(), "no gradient for {missing:?}");
}

#[test]
fn loss_falls_on_a_handful_of_images() {
    let dev = Device::Cpu;
    let images = synthetic_images(3, 16, 3, &dev).unwrap();
    // Narrower than `tiny()` to keep the test fast (Candle's conv backward is slow on CPU).
    let narrow = AutoencoderKlConfig {
        block_out_channels: vec![16, 32],
        ..AutoencoderKlConfig::tiny()
    };
    let vae = AutoencoderKl::new(narrow, 2, &dev).unwrap();
    let config = VaeTrainConfig {
        batch_size: 3,
        optimizer: AdamWConfig {
            lr: 5e-3,
            ..AdamWConfig::default()
        },
        ..train_config(40)
    };
    let mut trainer = VaeTrainer::new(vae, config).unwrap();
    let history = trainer.train(&images, &mut Silent).unwrap();
    assert_eq!(history.len(), 40);
    let first: f64 = history[..3].iter().map(|s| s.reconstruction).sum::<f64>() / 3.0;
    let last: f64 = history[37..].iter().map(|s| s.reconstruction).sum::<f64>() / 3.0;
    assert!(
        last < 0.6 * first,
        "reconstruction loss went from {first} to {last}"
    );
    // The codec's detached weights follow the optimiser's in-place updates.
    {
        use diffad_vae::LatentCodec;
        let vae = trainer.vae();
        let frozen = vae.encode(&images).unwrap();
        let tracked = vae
            .encode_raw(&images.affine(2.0, -1.0).unwrap())
            .unwrap()
            .mean;
        let d = flat(&(frozen - tracked).unwrap())
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        assert!(d < 1e-6, "frozen and tracked encoders differ by {d}");
    }
    // Warm-up over 2 steps: half the rate on step 0, the full rate from step 1.
    assert!((history[0].lr - 2.5e-3).abs() < 1e-12 && (history[1].lr - 5e-3).abs() < 1e-12);
}

#[test]
fn discriminator_switches_on_at_its_start_step() {
    let dev = Device::Cpu;
    let images = synthetic_images(4, 16, 3, &dev).unwrap();
    let vae = AutoencoderKl::new(AutoencoderKlConfig::tiny(), 2, &dev).unwrap();
    let config = VaeTrainConfig {
        discriminator: Some(tiny_gan()),
        ..train_config(3)
    };
    let mut trainer = VaeTrainer::new(vae, config).unwrap();
    let history = trainer.train(&images, &mut Silent).unwrap();
    assert!(history[0].generator.is_none() && history[0].discriminator.is_none());
    for s in &history[1..] {
        assert!(s.generator.is_some() && s.discriminator.is_some(), "{s:?}");
        let w = s.adversarial_weight.unwrap();
        assert!(w > 0.0 && w <= 0.5e4, "adaptive weight {w}");
    }
}

#[test]
fn resumed_training_matches_uninterrupted_training() {
    let dev = Device::Cpu;
    let images = synthetic_images(3, 16, 4, &dev).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = VaeTrainConfig {
        discriminator: Some(tiny_gan()),
        checkpoint_dir: Some(dir.path().to_path_buf()),
        ..train_config(4)
    };
    let vae = AutoencoderKl::new(AutoencoderKlConfig::tiny(), 7, &dev).unwrap();
    let mut straight = VaeTrainer::new(vae, config.clone()).unwrap();
    let full = straight.train(&images, &mut Silent).unwrap();

    let step2 = VaeTrainer::checkpoint_path(dir.path(), 2);
    assert!(step2.join("vae.safetensors").exists() && step2.join("optimizer.safetensors").exists());
    assert!(step2.join("discriminator_optimizer.safetensors").exists());
    assert_eq!(
        VaeTrainer::latest_checkpoint(dir.path()).unwrap(),
        Some(VaeTrainer::checkpoint_path(dir.path(), 4))
    );
    assert!(!dir.path().join("step-00000002.tmp").exists());

    let resume_dir = tempfile::tempdir().unwrap();
    let resumed_config = VaeTrainConfig {
        checkpoint_dir: Some(resume_dir.path().to_path_buf()),
        ..config
    };
    let mut resumed = VaeTrainer::resume(&step2, Some(resumed_config), &dev).unwrap();
    assert_eq!(resumed.step(), 2);
    assert_eq!(resumed.optimizer().step_count(), 2);
    let rest = resumed.train(&images, &mut Silent).unwrap();
    assert_eq!(rest.len(), 2);
    for (a, b) in full[2..].iter().zip(&rest) {
        assert!(
            (a.loss - b.loss).abs() <= 1e-6 * a.loss.abs().max(1.0),
            "{a:?} vs {b:?}"
        );
    }
    let a = straight.vae().varmap().data().lock().unwrap();
    let b = resumed.vae().varmap().data().lock().unwrap();
    for (name, var) in a.iter() {
        let (x, y) = (flat(var), flat(&b[name]));
        let d = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-6, "{name} differs by {d} after resuming");
    }
    // Moments were restored, not restarted.
    let key = "exp_avg_sq.encoder.conv_in.weight";
    let moment = |t: &VaeTrainer| {
        let state = t.optimizer().state_tensors();
        let (_, m) = state.into_iter().find(|(n, _)| n == key).unwrap();
        flat(&m)
    };
    let d = moment(&straight)
        .iter()
        .zip(moment(&resumed))
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(d < 1e-9, "second moments differ by {d}");
}

#[test]
fn bad_training_data_is_a_typed_error() {
    let dev = Device::Cpu;
    let vae = AutoencoderKl::new(AutoencoderKlConfig::tiny(), 0, &dev).unwrap();
    let mut trainer = VaeTrainer::new(vae, train_config(1)).unwrap();
    let empty = Tensor::zeros((0, 3, 16, 16), DType::F32, &dev).unwrap();
    assert!(matches!(
        trainer.train(&empty, &mut Silent),
        Err(Error::Data(_))
    ));
    let nan = (Tensor::zeros((2, 3, 16, 16), DType::F32, &dev).unwrap() / 0.0).unwrap();
    assert!(matches!(
        trainer.train(&nan, &mut Silent),
        Err(Error::Data(_))
    ));
    let odd = Tensor::zeros((2, 3, 15, 15), DType::F32, &dev).unwrap();
    assert!(matches!(
        trainer.train(&odd, &mut Silent),
        Err(Error::Data(_))
    ));
    assert_eq!(trainer.step(), 0);
}

#[test]
fn resume_from_a_missing_or_broken_checkpoint_fails_cleanly() {
    let dev = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        VaeTrainer::resume(dir.path(), None, &dev),
        Err(Error::Io { .. })
    ));
    std::fs::write(dir.path().join("state.json"), "{ not json").unwrap();
    assert!(matches!(
        VaeTrainer::resume(dir.path(), None, &dev),
        Err(Error::Json { .. })
    ));
    assert_eq!(
        VaeTrainer::latest_checkpoint(&dir.path().join("none")).unwrap(),
        None
    );
}

#[test]
fn gradients_match_finite_differences() {
    // A very narrow model in f64, so that central differences are accurate; the loss has
    // every term (L2 reconstruction, SSIM, KL with weight 1) and a sampled latent.
    let dev = Device::Cpu;
    let config = AutoencoderKlConfig {
        block_out_channels: vec![4, 8],
        norm_num_groups: 2,
        ..AutoencoderKlConfig::tiny()
    };
    let vae = AutoencoderKl::from_varmap_with_dtype(
        config,
        candle_nn::VarMap::new(),
        3,
        DType::F64,
        &dev,
    )
    .unwrap();
    let train = VaeTrainConfig {
        reconstruction: diffad_vae::Reconstruction::L2,
        kl_weight: 1.0,
        ..train_config(1)
    };
    let trainer = VaeTrainer::new(vae, train).unwrap();
    let x = synthetic_images(1, 8, 1, &dev)
        .unwrap()
        .affine(2.0, -1.0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let noise = Tensor::randn(0f64, 1f64, (1, 4, 4, 4), &dev).unwrap();
    let vars = diffad_nn::testing::named_vars(trainer.vae().varmap()).unwrap();
    let opts = diffad_nn::testing::FiniteDifference {
        eps: 1e-5,
        atol: 1e-6,
        rtol: 1e-4,
        max_elements_per_var: 3,
    };
    let mismatches = diffad_nn::testing::check_gradients(
        &vars,
        || {
            let terms = trainer
                .losses(&x, Some(&noise), false)
                .map_err(|e| match e {
                    diffad_vae::Error::Nn(n) => n,
                    other => diffad_nn::Error::Candle(candle_core::Error::wrap(other)),
                })?;
            Ok(terms.total)
        },
        &opts,
    )
    .unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

/// The shared AdamW with LDM's autoencoder betas lands on `torch.optim.AdamW`'s
/// weights after three steps fed PyTorch's own gradients (`scripts/make_fixtures.py`).
#[test]
fn adamw_matches_torch() {
    use candle_core::Var;
    use diffad_vae::{AdamW, AdamWConfig};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/adamw_io.safetensors");
    let t = diffad_vae::checkpoint::TensorFile::read(&path, &candle_core::Device::Cpu)
        .unwrap()
        .tensors;
    let var = Var::from_tensor(&t["p0"]).unwrap();
    let config = AdamWConfig {
        lr: 0.1,
        beta1: 0.5,
        beta2: 0.9,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut opt = AdamW::new(vec![("p".into(), var.clone())], config).unwrap();
    for g in ["g1", "g2", "g3"] {
        let mut grads = var.as_tensor().sum_all().unwrap().backward().unwrap();
        grads.insert(var.as_tensor(), t[g].clone());
        opt.step(&grads).unwrap();
    }
    let got = var.as_tensor().to_vec1::<f32>().unwrap();
    let want = t["p3"].to_vec1::<f32>().unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}
