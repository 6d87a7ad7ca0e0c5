//! Shrinking a square face chip to a classifier's input size by averaging
//! the area each output pixel covers.

use std::borrow::Cow;

use image::{RgbImage, imageops};

/// `chip` resized to `size`×`size`: an exact box average when the sides
/// divide (a 64-pixel chip for a 32-pixel net), otherwise image's triangle
/// filter, which widens with the scale factor.
pub fn shrink_to(chip: &RgbImage, size: u32) -> Cow<'_, RgbImage> {
    let (width, height) = chip.dimensions();
    if width == size && height == size {
        return Cow::Borrowed(chip);
    }
    if width == height && width > size && width % size == 0 {
        return Cow::Owned(box_average(chip, width / size));
    }
    Cow::Owned(imageops::resize(
        chip,
        size,
        size,
        imageops::FilterType::Triangle,
    ))
}

fn box_average(image: &RgbImage, factor: u32) -> RgbImage {
    let area = factor * factor;
    RgbImage::from_fn(image.width() / factor, image.height() / factor, |x, y| {
        let mut sum = [0u32; 3];
        for dy in 0..factor {
            for dx in 0..factor {
                let pixel = image.get_pixel(x * factor + dx, y * factor + dy);
                for c in 0..3 {
                    sum[c] += u32::from(pixel[c]);
                }
            }
        }
        image::Rgb(sum.map(|s| ((s + area / 2) / area) as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_by_averaging_each_two_by_two_block() {
        let image = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 10 + y) as u8, 0, 255]));
        let small = shrink_to(&image, 2);
        assert_eq!(small.dimensions(), (2, 2));
        // (0 + 1 + 10 + 11) / 4 = 5.5, rounded half up.
        assert_eq!(small.get_pixel(0, 0).0, [6, 0, 255]);
    }

    #[test]
    fn keeps_a_chip_of_the_right_size_as_it_is() {
        let image = RgbImage::new(32, 32);
        assert!(matches!(shrink_to(&image, 32), Cow::Borrowed(_)));
    }
}
