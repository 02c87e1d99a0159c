// Umbrella header for the data pipeline: datasets, augmentation, deterministic loader.
#pragma once
#include "data/augment.h"
#include "data/dataset.h"
#include "data/image_io.h"
#include "data/loader.h"
