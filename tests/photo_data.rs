//! The real-photograph benchmark (`diffad::photo_data`) and the patch
//! nearest-neighbour baseline (`diffad::baseline`).

use diffad::baseline::{evaluate_baseline, PatchKnnConfig};
use diffad::data::{MvtecClass, RgbImage};
use diffad::photo_data::{
    defective_crop, good_crop, write_photo_dataset, Layout, Part, PhotoDataOptions, PHOTO_CLASSES,
    PHOTO_DEFECTS,
};

fn tiny(classes: &[&str], size: usize) -> PhotoDataOptions {
    PhotoDataOptions {
        size,
        train: 3,
        test_good: 2,
        per_defect: 2,
        classes: classes.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn every_class_has_disjoint_parts_that_hold_a_crop() {
    assert!(PHOTO_CLASSES.len() >= 6);
    for class in PHOTO_CLASSES {
        let photo = class.photograph().unwrap();
        let train = photo.rects(Part::Train);
        let test = photo.rects(Part::Test);
        for &(tx, ty, tw, th) in &train {
            for &(sx, sy, sw, sh) in &test {
                let overlap_x = tx < sx + sw && sx < tx + tw;
                let overlap_y = ty < sy + sh && sy < ty + th;
                assert!(!(overlap_x && overlap_y), "{}: parts overlap", class.name);
            }
        }
        let all: Vec<_> = train.iter().chain(&test).collect();
        assert!(all.iter().all(|r| r.2.min(r.3) >= class.crop));
        let (w, h) = photo.dimensions();
        assert_eq!(
            all.iter().map(|r| r.2 * r.3).sum::<u32>(),
            w * h,
            "{}: parts cover the photo",
            class.name
        );
        let expected = match class.layout {
            Layout::TrainThenTest => 1,
            Layout::TestBetweenTrain => 2,
        };
        assert_eq!((train.len(), test.len()), (expected, 1), "{}", class.name);
    }
}

/// Where the test part lies between two training parts, the good test crops'
/// mean colour lies inside the range of the training crops' (the reason for
/// that layout; with the test part at one end of the wood photograph, every
/// test crop was darker than every training crop).
#[test]
fn test_crops_look_like_training_crops() {
    let mean = |img: &RgbImage| -> f64 {
        let v = img.to_rgb8();
        v.pixels().map(|p| f64::from(p[1])).sum::<f64>() / (v.width() * v.height()) as f64
    };
    for class in PHOTO_CLASSES
        .iter()
        .filter(|c| c.layout == Layout::TestBetweenTrain)
    {
        let photo = class.photograph().unwrap();
        let crops = |split: u64, n: u64| -> Vec<f64> {
            (0..n)
                .map(|i| mean(&good_crop(&photo, class, 32, 0, split, i).unwrap()))
                .collect()
        };
        let train = crops(diffad::photo_data::TRAIN_SPLIT, 40);
        let test = crops(diffad::photo_data::TEST_GOOD_SPLIT, 12);
        let (lo, hi) = train
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let inside = test.iter().filter(|&&v| v >= lo && v <= hi).count();
        assert!(
            inside >= 10,
            "{}: {inside} of 12 test crops inside [{lo}, {hi}]",
            class.name
        );
    }
}

#[test]
fn writes_mvtec_classes_with_binary_masks() {
    let out = tempfile::tempdir().unwrap();
    let dirs = write_photo_dataset(out.path(), &tiny(&["grass", "wood"], 32)).unwrap();
    assert_eq!(dirs.len(), 2);
    for dir in &dirs {
        let class = MvtecClass::open_for_eval(dir).unwrap();
        assert_eq!(class.train.len(), 3);
        assert_eq!(class.test.len(), 2 + 2 * PHOTO_DEFECTS.len());
        assert_eq!(
            class.defects(),
            vec!["contamination", "good", "hole", "scratch", "stain", "warp"]
        );
        for sample in class.test.iter().filter(|s| s.is_anomalous()) {
            let mask = image::open(sample.mask.as_ref().unwrap())
                .unwrap()
                .to_luma8();
            assert_eq!(mask.dimensions(), (32, 32));
            assert!(mask.pixels().all(|p| p[0] == 0 || p[0] == 255));
            assert!(mask.pixels().any(|p| p[0] == 255), "{:?}", sample.mask);
        }
    }
    // An existing class is refused, before anything is written.
    assert!(write_photo_dataset(out.path(), &tiny(&["wood"], 32)).is_err());
    assert!(write_photo_dataset(out.path(), &tiny(&["marble"], 32)).is_err());
}

fn to_u8(img: &RgbImage) -> image::RgbImage {
    img.to_rgb8()
}

/// Masks cover exactly the changed pixels: outside the mask the saved (8-bit)
/// image equals the clean crop, inside most pixels changed.
#[test]
fn masks_cover_the_changed_pixels() {
    for size in [64, 128] {
        for class in PHOTO_CLASSES {
            let photo = class.photograph().unwrap();
            for defect in PHOTO_DEFECTS {
                for index in 0..2 {
                    let (clean, bad, mask) =
                        defective_crop(&photo, &class, size, 7, defect, index).unwrap();
                    let (clean8, bad8) = (to_u8(&clean), to_u8(&bad));
                    let (mut masked, mut changed_inside) = (0, 0);
                    for y in 0..size {
                        for x in 0..size {
                            let (a, b) = (
                                clean8.get_pixel(x as u32, y as u32),
                                bad8.get_pixel(x as u32, y as u32),
                            );
                            if mask.view()[[y, x]] > 0.5 {
                                masked += 1;
                                changed_inside += usize::from(a != b);
                            } else {
                                assert_eq!(
                                    a, b,
                                    "{} {defect:?} {index}: unmasked ({y}, {x}) changed",
                                    class.name
                                );
                            }
                        }
                    }
                    assert!(masked > 0);
                    // Warps of smooth surfaces and faint stains on dark or
                    // saturated pixels can leave some masked pixels equal.
                    assert!(
                        changed_inside * 2 >= masked,
                        "{} {defect:?} {index} at {size}: {changed_inside} of {masked} masked pixels changed",
                        class.name
                    );
                }
            }
        }
    }
}

#[test]
fn crops_are_pure_functions_of_the_seed() {
    let class = PHOTO_CLASSES[0];
    let photo = class.photograph().unwrap();
    let a = good_crop(&photo, &class, 64, 1, 0, 5).unwrap();
    assert_eq!(a, good_crop(&photo, &class, 64, 1, 0, 5).unwrap());
    assert_ne!(a, good_crop(&photo, &class, 64, 1, 0, 6).unwrap());
    assert_ne!(a, good_crop(&photo, &class, 64, 2, 0, 5).unwrap());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (_, b, m) = defective_crop(&photo, &class, 64, 1, PHOTO_DEFECTS[3], 2).unwrap();
    let (_, b1, m1) = pool
        .install(|| defective_crop(&photo, &class, 64, 1, PHOTO_DEFECTS[3], 2))
        .unwrap();
    assert_eq!((b, m), (b1, m1));
}

/// The baseline finds an obvious pasted patch (pixel AUROC > 0.9).
#[test]
fn baseline_finds_a_pasted_patch() {
    let out = tempfile::tempdir().unwrap();
    let options = PhotoDataOptions {
        size: 32,
        train: 8,
        test_good: 3,
        per_defect: 0,
        classes: vec!["gravel".into()],
        ..Default::default()
    };
    let dir = write_photo_dataset(out.path(), &options).unwrap().remove(0);
    let photo = PHOTO_CLASSES[2].photograph().unwrap();
    for index in 0..4u32 {
        let clean = good_crop(&photo, &PHOTO_CLASSES[2], 32, 99, 1, u64::from(index)).unwrap();
        let mut img = clean.to_rgb8();
        let mut mask = image::GrayImage::new(32, 32);
        let (x0, y0) = (4 + 5 * index, 6 + 4 * index);
        for y in y0..y0 + 8 {
            for x in x0..x0 + 8 {
                img.put_pixel(x, y, image::Rgb([230, 20, 200]));
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        for (sub, name) in [
            ("test/pasted", format!("{index:03}.png")),
            ("ground_truth/pasted", format!("{index:03}_mask.png")),
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            if sub.starts_with("test") {
                img.save(dir.join(sub).join(name)).unwrap();
            } else {
                mask.save(dir.join(sub).join(name)).unwrap();
            }
        }
    }
    let class = MvtecClass::open_for_eval(&dir).unwrap();
    let eval_dir = out.path().join("eval");
    let result = evaluate_baseline(&class, None, &eval_dir, &PatchKnnConfig::default()).unwrap();
    assert_eq!(result.size, 32);
    assert_eq!(result.memory_len, 8 * 16 * 16);
    assert!(
        result.metrics.pixel_auroc.unwrap() > 0.9,
        "{:?}",
        result.metrics
    );
    assert!(result.metrics.image_auroc > 0.9, "{:?}", result.metrics);
    assert!(eval_dir.join("metrics.json").is_file());
    assert!(eval_dir.join("scores.csv").is_file());
}
