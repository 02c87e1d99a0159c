#include "viz/raster.h"

#include <cmath>
#include <filesystem>
#include <system_error>

#include "kat/core/error.h"

#ifdef KAT_HAVE_RSVG
#include <cairo.h>
#include <librsvg/rsvg.h>
#endif

namespace kat::viz {

#ifdef KAT_HAVE_RSVG

bool png_supported() { return true; }

void svg_to_png(const std::string& svg, const std::string& path, double scale) {
  KAT_CHECK(scale > 0 && scale <= 8, "cannot write plot '", path, "': scale ", scale, " outside (0, 8]");
  GError* err = nullptr;
  RsvgHandle* h = rsvg_handle_new_from_data(reinterpret_cast<const guint8*>(svg.data()), gsize(svg.size()), &err);
  if (!h) {
    const std::string msg = err ? err->message : "unknown error";
    if (err) g_error_free(err);
    throw Error("cannot write plot '" + path + "': the SVG does not parse (" + msg + ")");
  }
  gdouble w = 0, hh = 0;
  if (!rsvg_handle_get_intrinsic_size_in_pixels(h, &w, &hh) || w <= 0 || hh <= 0) {
    g_object_unref(h);
    throw Error("cannot write plot '" + path + "': the SVG has no width/height in px");
  }
  const int W = int(std::ceil(w * scale)), H = int(std::ceil(hh * scale));
  KAT_CHECK(W <= 32768 && H <= 32768, "cannot write plot '", path, "': ", W, "x", H, " px is too large");
  cairo_surface_t* surf = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, W, H);
  cairo_t* cr = cairo_create(surf);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  const RsvgRectangle viewport{0, 0, double(W), double(H)};
  const gboolean ok = rsvg_handle_render_document(h, cr, &viewport, &err);
  cairo_destroy(cr);
  g_object_unref(h);
  std::string msg;
  if (!ok) {
    msg = err ? err->message : "render failed";
    if (err) g_error_free(err);
  }
  const std::string tmp = path + ".tmp";
  cairo_status_t st = CAIRO_STATUS_SUCCESS;
  if (ok) st = cairo_surface_write_to_png(surf, tmp.c_str());
  cairo_surface_destroy(surf);
  std::error_code ec;
  if (!ok || st != CAIRO_STATUS_SUCCESS) {
    std::filesystem::remove(tmp, ec);
    throw Error("cannot write plot '" + path + "': " + (!ok ? msg : std::string(cairo_status_to_string(st))));
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::error_code ec2;
    std::filesystem::remove(tmp, ec2);
    throw Error("cannot write plot '" + path + "': " + ec.message());
  }
}

#else

bool png_supported() { return false; }

void svg_to_png(const std::string&, const std::string& path, double) {
  throw Error("cannot write plot '" + path +
              "': this build has no PNG output (install librsvg2-dev and re-run cmake)");
}

#endif

}  // namespace kat::viz
