//! Shared figure style: the bundled font, the Okabe-Ito colour-blind-safe palette and markers.

use std::sync::Once;

use plotters::coord::CoordTranslate;
use plotters::element::{Circle, EmptyElement, Rectangle, TriangleMarker};
use plotters::prelude::*;

/// Font family name every figure uses (DejaVu Sans, bundled).
pub const FONT: &str = "sans-serif";

static FONT_BYTES: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");

/// Registers the bundled font so no system font library is needed.
pub fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            plotters::style::register_font(FONT, style, FONT_BYTES)
                .unwrap_or_else(|_| panic!("bundled font is valid"));
        }
    });
}

/// Okabe & Ito (2008) colours, black last.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// Colour of the `i`-th arm.
pub fn arm_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Draws marker `i` at `at`: circle, triangle, square, cross, diamond in turn.
pub fn draw_marker<DB, CT>(
    area: &DrawingArea<DB, CT>,
    i: usize,
    at: CT::From,
    size: u32,
    color: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend,
    CT: CoordTranslate,
    CT::From: Clone,
{
    let s = size as i32;
    match i % 5 {
        0 => area.draw(&Circle::new(at, size, color.filled())),
        1 => area.draw(&TriangleMarker::new(at, s + 1, color.filled())),
        2 => {
            area.draw(&(EmptyElement::at(at) + Rectangle::new([(-s, -s), (s, s)], color.filled())))
        }
        3 => area.draw(&Cross::new(at, s + 1, color.stroke_width(2))),
        _ => area.draw(
            &(EmptyElement::at(at)
                + Polygon::new(
                    vec![(0, -s - 1), (s + 1, 0), (0, s + 1), (-s - 1, 0)],
                    color.filled(),
                )),
        ),
    }
}
