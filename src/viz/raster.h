// SVG -> PNG for the plots, through librsvg + cairo (Debian: librsvg2-dev). Optional at build
// time: without the library png_supported() is false and svg_to_png throws a clear error.
#pragma once
#include <string>

namespace kat::viz {

// True when this build can rasterize SVG (librsvg and cairo were found at configure time).
bool png_supported();

// Renders the SVG document `svg` (with width/height attributes, as render_svg writes) to a PNG
// file at `scale` x its size in px (white background), written through a temporary file and a
// rename. Throws kat::Error naming `path` (unsupported build, unparsable SVG, write failure).
void svg_to_png(const std::string& svg, const std::string& path, double scale = 1.0);

}  // namespace kat::viz
