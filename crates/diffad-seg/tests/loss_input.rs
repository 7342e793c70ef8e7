//! Focal loss against hand-computed values; interpolated channels and the
//! segmenter input variants; anomaly maps and image scores.

use candle_core::{DType, Device, Tensor, Var};
use diffad_seg::{
    anomaly_map, focal_loss, image_scores, interpolated_latent, Error, FocalLossConfig, SegInput,
};

fn logits2(pairs: &[(f32, f32)]) -> Tensor {
    // (1, 2, 1, n): pixel i has logits pairs[i].
    let n = pairs.len();
    let mut v = Vec::with_capacity(2 * n);
    v.extend(pairs.iter().map(|p| p.0));
    v.extend(pairs.iter().map(|p| p.1));
    Tensor::from_vec(v, (1, 2, 1, n), &Device::Cpu).unwrap()
}

fn mask(values: &[f32]) -> Tensor {
    Tensor::from_vec(values.to_vec(), (1, 1, 1, values.len()), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    f64::from(t.to_scalar::<f32>().unwrap())
}

#[test]
fn focal_loss_hand_computed_with_smoothing() {
    // Logits (0, ln 3): p = (0.25, 0.75). Clamped one-hot (1e-5, 1 - 1e-5).
    let s = 1e-5f64;
    let lg = logits2(&[(0.0, 3f32.ln()), (0.0, 3f32.ln())]);
    // Pixel 0 is anomalous (class 1), pixel 1 normal (class 0).
    let loss = focal_loss(&lg, &mask(&[1.0, 0.0]), 2.0, None, s).unwrap();
    let pt1 = s * 0.25 + (1.0 - s) * 0.75 + s;
    let pt0 = (1.0 - s) * 0.25 + s * 0.75 + s;
    let l = |pt: f64| -(1.0 - pt).powi(2) * pt.ln();
    let want = (l(pt1) + l(pt0)) / 2.0;
    assert!(
        (scalar(&loss) - want).abs() < 1e-6,
        "{} vs {want}",
        scalar(&loss)
    );
    // DRAEM's default config is the same call.
    let cfg = FocalLossConfig::default();
    let again = diffad_seg::focal_loss_with(&lg, &mask(&[1.0, 0.0]), &cfg).unwrap();
    assert_eq!(scalar(&again), scalar(&loss));

    // alpha = [1, 3] normalises to [0.25, 0.75]; alpha_t by true class.
    let loss = focal_loss(&lg, &mask(&[1.0, 0.0]), 2.0, Some(&[1.0, 3.0]), s).unwrap();
    let want = (0.75 * l(pt1) + 0.25 * l(pt0)) / 2.0;
    assert!((scalar(&loss) - want).abs() < 1e-6);

    // gamma = 0 is (smoothed) cross-entropy.
    let loss = focal_loss(&lg, &mask(&[1.0, 0.0]), 0.0, None, s).unwrap();
    let want = -(pt1.ln() + pt0.ln()) / 2.0;
    assert!((scalar(&loss) - want).abs() < 1e-6);

    // Fractional gamma, no smoothing: -(1 - 0.75)^0.5 ln 0.75.
    let one = logits2(&[(0.0, 3f32.ln())]);
    let loss = focal_loss(&one, &mask(&[1.0]), 0.5, None, 0.0).unwrap();
    let want = -(0.25f64).powf(0.5) * 0.75f64.ln();
    assert!((scalar(&loss) - want).abs() < 1e-6);
}

#[test]
fn focal_loss_is_finite_for_confident_mistakes() {
    let lg = logits2(&[(100.0, -100.0)]);
    // Without smoothing the log term is the log-softmax itself: -200.
    let var = Var::from_tensor(&lg).unwrap();
    let loss = focal_loss(var.as_tensor(), &mask(&[1.0]), 2.0, None, 0.0).unwrap();
    assert!((scalar(&loss) - 200.0).abs() < 1e-3, "{}", scalar(&loss));
    let g = loss.backward().unwrap();
    let g = g
        .get(var.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
    // With smoothing, pt >= 2e-5: loss = (1 - 2e-5)^2 * -ln(2e-5).
    let loss = focal_loss(&lg, &mask(&[1.0]), 2.0, None, 1e-5).unwrap();
    let want = (1.0 - 2e-5f64).powi(2) * -(2e-5f64).ln();
    assert!((scalar(&loss) - want).abs() < 1e-3 * want);
}

#[test]
fn focal_loss_rejects_bad_input() {
    let lg = logits2(&[(0.0, 0.0), (0.0, 0.0)]);
    assert!(matches!(
        focal_loss(&lg, &mask(&[0.0, 2.0]), 2.0, None, 1e-5),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        focal_loss(&lg, &mask(&[0.0, f32::NAN]), 2.0, None, 1e-5),
        Err(Error::NonFinite(_))
    ));
    assert!(matches!(
        focal_loss(&lg, &mask(&[0.0]), 2.0, None, 1e-5),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        focal_loss(&lg, &mask(&[0.0, 1.0]), 2.0, Some(&[1.0]), 1e-5),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        focal_loss(&lg, &mask(&[0.0, 1.0]), -1.0, None, 1e-5),
        Err(Error::Config(_))
    ));
    let flat = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        focal_loss(&flat, &mask(&[0.0, 1.0]), 2.0, None, 1e-5),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn interpolated_latent_is_the_convex_combination() {
    let dev = Device::Cpu;
    let c = Tensor::new(&[[1f32, -2.0], [4.0, 8.0]], &dev).unwrap();
    let z = Tensor::new(&[[3f32, 2.0], [0.0, -8.0]], &dev).unwrap();
    for lambda in [0.0, 0.3, 0.5, 1.0] {
        let got = interpolated_latent(&c, &z, lambda)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let cv = [1f64, -2.0, 4.0, 8.0];
        let zv = [3f64, 2.0, 0.0, -8.0];
        for i in 0..4 {
            let want = lambda * cv[i] + (1.0 - lambda) * zv[i];
            assert!((f64::from(got[i]) - want).abs() < 1e-6);
        }
    }
    assert!(matches!(
        interpolated_latent(&c, &z, 1.5),
        Err(Error::Config(_))
    ));
    let short = Tensor::new(&[1f32], &dev).unwrap();
    assert!(matches!(
        interpolated_latent(&c, &short, 0.5),
        Err(Error::Shape { .. })
    ));
}

#[test]
fn seg_input_variants_build_the_table_1_inputs() {
    let dev = Device::Cpu;
    // A toy "decoder": images are the latents times 10, upsampled x2.
    let decoder = |z: &Tensor| -> candle_core::Result<Tensor> {
        let (b, c, h, w) = z.dims4()?;
        (z * 10.0)?
            .upsample_nearest2d(2 * h, 2 * w)?
            .reshape((b, c, 2 * h, 2 * w))
    };
    let c = Tensor::full(1f32, (1, 3, 2, 2), &dev).unwrap();
    let z_r = Tensor::full(3f32, (1, 3, 2, 2), &dev).unwrap();
    let x_a = Tensor::full(-1f32, (1, 3, 4, 4), &dev).unwrap();
    let channel_means = |t: &Tensor| -> Vec<f32> {
        t.mean_keepdim(3)
            .unwrap()
            .mean_keepdim(2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };

    let interp = SegInput::default();
    assert_eq!(interp, SegInput::Interpolated { lambda: 0.5 });
    assert_eq!(interp.in_channels(3), 9);
    let x = interp.from_latents(&x_a, &c, &z_r, &decoder).unwrap();
    assert_eq!(x.dims(), &[1, 9, 4, 4]);
    // x_r = 30, x_inter = D(0.5 * 1 + 0.5 * 3) = 20, x_a = -1.
    assert_eq!(
        channel_means(&x),
        vec![30., 30., 30., 20., 20., 20., -1., -1., -1.]
    );

    let vae = SegInput::VaeReconstruction;
    let x = vae.from_latents(&x_a, &c, &z_r, &decoder).unwrap();
    assert_eq!(
        channel_means(&x),
        vec![30., 30., 30., 10., 10., 10., -1., -1., -1.]
    );

    let none = SegInput::ReconstructionOnly;
    assert_eq!(none.in_channels(3), 6);
    let x = none.from_latents(&x_a, &c, &z_r, &decoder).unwrap();
    assert_eq!(channel_means(&x), vec![30., 30., 30., -1., -1., -1.]);

    // Single images (C, H, W) concatenate along axis 0.
    let img = Tensor::zeros((3, 4, 4), DType::F32, &dev).unwrap();
    assert_eq!(
        interp.assemble(&img, Some(&img), &img).unwrap().dims(),
        &[9, 4, 4]
    );
    // Missing middle piece, mismatched shapes, bad lambda.
    assert!(matches!(
        interp.assemble(&x_a, None, &x_a),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        interp.assemble(&img, Some(&img), &x_a),
        Err(Error::Shape { .. })
    ));
    assert!(SegInput::Interpolated { lambda: -0.1 }.validate().is_err());
}

#[test]
fn anomaly_map_and_image_scores() {
    let dev = Device::Cpu;
    // Logit difference d gives p(anomalous) = sigmoid(d).
    let d = Tensor::new(&[-2f32, 0.0, 1.0, 3.0], &dev)
        .unwrap()
        .reshape((1, 1, 2, 2))
        .unwrap();
    let zeros = d.zeros_like().unwrap();
    let logits = Tensor::cat(&[&zeros, &d], 1).unwrap();
    let map = anomaly_map(&logits).unwrap();
    assert_eq!(map.dims(), &[1, 1, 2, 2]);
    let got = map.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (g, x) in got.iter().zip([-2f32, 0.0, 1.0, 3.0]) {
        assert!((g - 1.0 / (1.0 + (-x).exp())).abs() < 1e-6);
    }
    assert!(anomaly_map(&d).is_err());

    // Image score: a 21x21 block of ones in a 64x64 map scores 1; a single
    // hot pixel scores 1 / 441.
    let mut v = vec![0f32; 2 * 64 * 64];
    for y in 10..31 {
        for x in 20..41 {
            v[y * 64 + x] = 1.0;
        }
    }
    v[64 * 64 + 32 * 64 + 32] = 1.0;
    let maps = Tensor::from_vec(v, (2, 1, 64, 64), &dev).unwrap();
    let s = image_scores(&maps).unwrap();
    assert!(
        (s[0] - 1.0).abs() < 1e-6 && (s[1] - 1.0 / 441.0).abs() < 1e-7,
        "{s:?}"
    );
    let nan = Tensor::full(f32::NAN, (1, 1, 32, 32), &dev).unwrap();
    assert!(matches!(image_scores(&nan), Err(Error::Metrics(_))));
}
