//! Printing documents for people: one table row per face.

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use lambdex_proto::{PredictionDoc, Status};

/// A table of every face of every document.
pub fn faces_table(docs: &[PredictionDoc]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "image",
        "face",
        "box (x, y, w, h)",
        "score",
        "age",
        "gender",
    ]);
    for doc in docs {
        match doc.status {
            Status::Ok | Status::Partial => {
                for (i, face) in doc.faces.iter().enumerate() {
                    let b = face.bbox;
                    table.add_row(vec![
                        Cell::new(&doc.image_url),
                        Cell::new(i + 1).set_alignment(CellAlignment::Right),
                        Cell::new(format!(
                            "{:.0}, {:.0}, {:.0}, {:.0}",
                            b.x, b.y, b.width, b.height
                        )),
                        Cell::new(format!("{:.2}", face.score)),
                        Cell::new(face.age.map_or_else(
                            || "-".to_owned(),
                            |age| format!("{:.1} ± {:.1}", age.years, age.std_dev),
                        )),
                        Cell::new(face.gender.map_or_else(
                            || "-".to_owned(),
                            |g| format!("{} ({:.0} %)", g.label, g.probability * 100.0),
                        )),
                    ]);
                }
            }
            Status::NoFaces => {
                table.add_row(vec![Cell::new(&doc.image_url), Cell::new("no faces")]);
            }
            Status::Failed => {
                let reason = doc
                    .failure
                    .as_ref()
                    .map_or("failed", |failure| failure.class.as_str());
                table.add_row(vec![
                    Cell::new(&doc.image_url),
                    Cell::new(format!("failed: {reason}")),
                ]);
            }
        }
    }
    table
}
