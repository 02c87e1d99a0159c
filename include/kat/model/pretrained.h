// Fine-tuning initialisation: weights from a checkpoint of another configuration (ours or timm's),
// adapted where timm adapts them when it loads a pretrained model for a new task.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kat {

class KatModel;
namespace io {
class SafetensorsFile;
}

// Copies every parameter of `m` from `f` (timm names; training state such as optim.* / ema.* is
// ignored). Each tensor must be present with the model's shape, except:
//   head.weight, head.bias   another class count: left as `m` initialised them;
//   pos_embed                another patch grid (img_size / patch_size): the grid is resampled
//                            as timm's resample_abs_pos_embed does (bicubic, antialias, class
//                            token kept);
//   patch_embed.proj.weight  3 input channels for a 1-channel model: summed over the channels
//                            (timm's adapt_input_conv).
// Anything else (another width, depth, missing or unexpected tensors) is an error naming the
// tensor. Everything is validated before the first write. Returns one line per adapted tensor.
std::vector<std::string> load_pretrained(KatModel& m, const io::SafetensorsFile& f);

// Resamples a (in_h, in_w, C) channels-last grid to (out_h, out_w, C) like torch's
// F.interpolate(mode="bicubic", antialias=True, align_corners=False) on (1, C, H, W): separable
// Keys cubic (a = -0.5) widened by the scale when shrinking, taps clipped to the grid and the
// weights renormalised (PIL's resampling), width first, then height; float accumulation.
void resample_grid_bicubic_aa(const float* in, int in_h, int in_w, int C, int out_h, int out_w, float* out);

}  // namespace kat
