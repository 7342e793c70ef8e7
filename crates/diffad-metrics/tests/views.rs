//! The `ndarray` view entry points give exactly the numbers of the slice
//! entry points, for standard-layout views and for views in other layouts
//! (a transposed array read through `.t()`, a strided slice).

use diffad_metrics::{
    aupro, aupro_view, image_score, image_score_view, psnr, psnr_view, Error, Evaluator,
    PixelMetrics,
};
use ndarray::{s, Array2, Array3, ArrayView2, ShapeBuilder};
use proptest::prelude::*;

/// 1 to 4 maps and masks of `h x w` pixels (at least 2), with a defect pixel
/// and a normal pixel in image 0.
fn images_case() -> impl Strategy<Value = (usize, usize, Vec<Vec<f32>>, Vec<Vec<bool>>)> {
    (2usize..9, 1usize..9, 1usize..5).prop_flat_map(|(h, w, count)| {
        let n = h * w;
        (
            prop::collection::vec(prop::collection::vec(0u8..20, n), count),
            prop::collection::vec(prop::collection::vec(any::<bool>(), n), count),
        )
            .prop_map(move |(levels, mut masks)| {
                let maps = levels
                    .iter()
                    .map(|l| l.iter().map(|&v| f32::from(v) / 19.0).collect())
                    .collect();
                masks[0][0] = true;
                masks[0][1] = false;
                (h, w, maps, masks)
            })
    })
}

/// The same `(H, W)` values stored column-major (Fortran order), so that
/// the view is not in standard layout.
fn column_major<T: Copy>(h: usize, w: usize, row_major: &[T]) -> Array2<T> {
    let standard = ArrayView2::from_shape((h, w), row_major).expect("shape");
    let mut f = Array2::from_shape_vec((h, w).f(), row_major.to_vec()).expect("shape");
    f.assign(&standard);
    assert!(!f.is_standard_layout() || h == 1 || w == 1);
    f
}

fn evaluate_slices(
    w: usize,
    h: usize,
    maps: &[Vec<f32>],
    masks: &[Vec<bool>],
) -> (Vec<f32>, Option<String>) {
    let mut eval = Evaluator::with_options(3, 0.3).expect("options");
    let scores = maps
        .iter()
        .zip(masks)
        .enumerate()
        .map(|(i, (m, k))| {
            eval.add(if i % 2 == 0 { "a" } else { "good" }, m, k, w, h)
                .expect("add")
        })
        .collect();
    (
        scores,
        eval.finish().ok().map(|r| r.to_json().expect("json")),
    )
}

fn evaluate_views(
    maps: &[ArrayView2<'_, f32>],
    masks: &[ArrayView2<'_, bool>],
) -> (Vec<f32>, Option<String>) {
    let mut eval = Evaluator::with_options(3, 0.3).expect("options");
    let scores = maps
        .iter()
        .zip(masks)
        .enumerate()
        .map(|(i, (m, k))| {
            eval.add_view(if i % 2 == 0 { "a" } else { "good" }, m.view(), k.view())
                .expect("add")
        })
        .collect();
    (
        scores,
        eval.finish().ok().map(|r| r.to_json().expect("json")),
    )
}

fn views<'a>(
    maps: &'a [Array2<f32>],
    masks: &'a [Array2<bool>],
) -> (Vec<ArrayView2<'a, f32>>, Vec<ArrayView2<'a, bool>>) {
    (
        maps.iter().map(Array2::view).collect(),
        masks.iter().map(Array2::view).collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn views_and_slices_give_identical_numbers((h, w, maps, masks) in images_case()) {
        // Standard layout and column-major copies of the same images.
        let std_maps: Vec<Array2<f32>> = maps
            .iter()
            .map(|m| Array2::from_shape_vec((h, w), m.clone()).expect("shape"))
            .collect();
        let std_masks: Vec<Array2<bool>> = masks
            .iter()
            .map(|m| Array2::from_shape_vec((h, w), m.clone()).expect("shape"))
            .collect();
        let f_maps: Vec<Array2<f32>> = maps.iter().map(|m| column_major(h, w, m)).collect();
        let f_masks: Vec<Array2<bool>> = masks.iter().map(|m| column_major(h, w, m)).collect();

        let expected = evaluate_slices(w, h, &maps, &masks);
        for (vm, vk) in [views(&std_maps, &std_masks), views(&f_maps, &f_masks)] {
            prop_assert_eq!(&evaluate_views(&vm, &vk), &expected);

            let mut by_slice = PixelMetrics::new();
            let mut by_view = PixelMetrics::new();
            for ((m, k), (a, b)) in maps.iter().zip(&masks).zip(vm.iter().zip(&vk)) {
                by_slice.update_defect("d", m, k, w, h).expect("update");
                by_view.update_defect_view("d", a.view(), b.view()).expect("update");
            }
            let (s, v) = (by_slice.finish(), by_view.finish());
            prop_assert_eq!(s.is_ok(), v.is_ok());
            if let (Ok(s), Ok(v)) = (s, v) {
                prop_assert_eq!(s, v);
            }

            let slice_refs: Vec<&[f32]> = maps.iter().map(|m| &m[..]).collect();
            let mask_refs: Vec<&[bool]> = masks.iter().map(|m| &m[..]).collect();
            let s = aupro(&slice_refs, &mask_refs, w, h, 0.3);
            let v = aupro_view(&vm, &vk, 0.3);
            prop_assert_eq!(s.is_ok(), v.is_ok());
            if let (Ok(s), Ok(v)) = (s, v) {
                prop_assert_eq!(s.to_bits(), v.to_bits());
            }

            for (m, a) in maps.iter().zip(&vm) {
                for k in [1, 2, 3, 21] {
                    let s = image_score(m, w, h, k).expect("score");
                    let v = image_score_view(a.view(), k).expect("score");
                    prop_assert_eq!(s.to_bits(), v.to_bits());
                }
            }
        }
    }
}

#[test]
fn psnr_view_matches_per_pixel_and_per_element_slices() {
    let (h, w) = (3, 4);
    let a: Vec<f32> = (0..3 * h * w)
        .map(|i| (i as f32 * 0.37).sin().abs())
        .collect();
    let b: Vec<f32> = (0..3 * h * w)
        .map(|i| (i as f32 * 0.11).cos().abs())
        .collect();
    let mask: Vec<bool> = (0..h * w).map(|i| i % 3 != 1).collect();
    let expected = psnr(&a, &b, &mask).unwrap();

    let a3 = Array3::from_shape_vec((3, h, w), a.clone()).unwrap();
    let b3 = Array3::from_shape_vec((3, h, w), b.clone()).unwrap();
    let m2 = Array2::from_shape_vec((h, w), mask.clone()).unwrap();
    // Per-pixel (H, W) mask broadcast over the channels.
    let got = psnr_view(a3.view(), b3.view(), m2.view()).unwrap();
    assert_eq!(got.to_bits(), expected.to_bits());
    // Per-element mask, and the same images read through a non-standard layout.
    let m3 = m2.broadcast((3, h, w)).unwrap().to_owned();
    let a_t = a3.view().reversed_axes().as_standard_layout().into_owned(); // (w, h, 3)
    assert!(!a_t.view().reversed_axes().is_standard_layout());
    let got = psnr_view(a_t.view().reversed_axes(), b3.view(), m3.view()).unwrap();
    assert_eq!(got.to_bits(), expected.to_bits());
}

#[test]
fn view_shapes_are_checked() {
    let map = Array2::<f32>::zeros((2, 3));
    let transposed_mask = Array2::<bool>::from_elem((3, 2), false);
    let mut eval = Evaluator::new();
    assert!(matches!(
        eval.add_view("good", map.view(), transposed_mask.view()),
        Err(Error::ShapeMismatch {
            image: 0,
            what: "mask",
            ..
        })
    ));
    let mut pixel = PixelMetrics::new();
    assert!(matches!(
        pixel.update_view(map.view(), transposed_mask.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let other = Array2::<f32>::zeros((3, 2));
    let mask = Array2::<bool>::from_elem((2, 3), true);
    assert!(matches!(
        aupro_view(
            &[map.view(), other.view()],
            &[mask.view(), mask.view()],
            0.3
        ),
        Err(Error::ShapeMismatch {
            image: 1,
            what: "anomaly map",
            ..
        })
    ));
    assert!(matches!(
        psnr_view(map.view(), other.view(), mask.view()),
        Err(Error::ShapeMismatch {
            what: "image b",
            ..
        })
    ));
    assert!(matches!(
        psnr_view(map.view(), map.view(), transposed_mask.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    // A strided slice of a larger array is not contiguous but still works.
    let big = Array2::from_shape_fn((4, 6), |(y, x)| (y * 6 + x) as f32 / 24.0);
    let strided = big.slice(s![..;2, ..;2]);
    let owned = strided.to_owned();
    assert_eq!(
        image_score_view(strided, 3).unwrap(),
        image_score(owned.as_slice().unwrap(), 3, 2, 3).unwrap()
    );
}
