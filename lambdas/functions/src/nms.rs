//! Merging overlapping detections: MediaPipe's weighted non-max suppression,
//! which averages a cluster of boxes by score instead of keeping only the
//! best one, so the kept box and keypoints are steadier.

use crate::detect::Detection;

/// When two detections count as the same face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overlap {
    /// Intersection over union above which two boxes are one face.
    pub iou: f32,
    /// Intersection over the smaller box's area above which two boxes are
    /// one face: catches a partial box (a face cut by a tile's edge) inside
    /// a whole one, whose union is too large for the IoU test.
    pub containment: f32,
}

impl Default for Overlap {
    fn default() -> Self {
        Self {
            iou: 0.3,
            containment: 0.7,
        }
    }
}

impl Overlap {
    fn same_face(&self, a: &Detection, b: &Detection) -> bool {
        let inter = intersection(a, b);
        if inter <= 0.0 {
            return false;
        }
        let (area_a, area_b) = (a.area(), b.area());
        let union = area_a + area_b - inter;
        inter / union > self.iou
            || inter / area_a.min(area_b) > self.containment
            || centre_inside(a, b)
            || centre_inside(b, a)
    }
}

/// Whether the centre of the smaller box `a` lies inside `b`: two passes
/// at different scales can box one small face loosely enough to fail the
/// area tests, but not so loosely that the centre leaves the face.
fn centre_inside(a: &Detection, b: &Detection) -> bool {
    if a.area() > b.area() {
        return false;
    }
    let (cx, cy) = ((a.bbox[0] + a.bbox[2]) / 2.0, (a.bbox[1] + a.bbox[3]) / 2.0);
    cx > b.bbox[0] && cx < b.bbox[2] && cy > b.bbox[1] && cy < b.bbox[3]
}

fn intersection(a: &Detection, b: &Detection) -> f32 {
    let w = a.bbox[2].min(b.bbox[2]) - a.bbox[0].max(b.bbox[0]);
    let h = a.bbox[3].min(b.bbox[3]) - a.bbox[1].max(b.bbox[1]);
    w.max(0.0) * h.max(0.0)
}

/// Clusters detections around the most confident one left, replaces each
/// cluster by its score-weighted mean (keeping the best score), and returns
/// them most confident first.
pub fn weighted_nms(mut detections: Vec<Detection>, overlap: Overlap) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept = Vec::new();
    while let Some(best) = detections.first().cloned() {
        let (cluster, rest): (Vec<_>, Vec<_>) = detections
            .into_iter()
            .partition(|d| overlap.same_face(&best, d));
        detections = rest;
        let total: f32 = cluster.iter().map(|d| d.score).sum();
        let mut merged = best.clone();
        merged.bbox = [0.0; 4];
        merged.keypoints = [[0.0; 2]; 6];
        for d in &cluster {
            let w = d.score / total;
            for (m, v) in merged.bbox.iter_mut().zip(d.bbox) {
                *m += w * v;
            }
            for (m, v) in merged.keypoints.iter_mut().zip(d.keypoints) {
                m[0] += w * v[0];
                m[1] += w * v[1];
            }
        }
        kept.push(merged);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, y: f32, size: f32, score: f32) -> Detection {
        Detection {
            bbox: [x, y, x + size, y + size],
            keypoints: [[x + size / 2.0, y + size / 2.0]; 6],
            score,
        }
    }

    #[test]
    fn overlapping_boxes_merge_into_their_score_weighted_mean() {
        let merged = weighted_nms(
            vec![det(0.0, 0.0, 10.0, 0.25), det(2.0, 0.0, 10.0, 0.75)],
            Overlap::default(),
        );
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].score, 0.75);
        assert!((merged[0].bbox[0] - 1.5).abs() < 1e-5, "{:?}", merged[0]);
        assert!((merged[0].keypoints[0][0] - 6.5).abs() < 1e-5);
    }

    #[test]
    fn separate_faces_stay_separate_and_come_best_first() {
        let merged = weighted_nms(
            vec![det(0.0, 0.0, 10.0, 0.8), det(50.0, 0.0, 10.0, 0.9)],
            Overlap::default(),
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].bbox[0], 50.0);
    }

    #[test]
    fn a_partial_box_inside_a_whole_one_is_the_same_face() {
        // IoU is 0.25 (below 0.3), but the small box lies wholly inside.
        let merged = weighted_nms(
            vec![det(0.0, 0.0, 20.0, 0.9), det(0.0, 0.0, 10.0, 0.8)],
            Overlap::default(),
        );
        assert_eq!(merged.len(), 1);
    }
}
