// train/run_phase.h: the phase a run is in, and the SIGUSR1 line that reports it.
#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "train/run_phase.h"

namespace {

TEST(RunPhase, ScopedPhaseIsReportedAndRestored) {
  kat::set_run_phase("outer", 3);
  {
    kat::RunPhase p("writing a checkpoint", 7);
    EXPECT_STREQ(kat::run_phase(), "writing a checkpoint");
    EXPECT_EQ(kat::run_phase_step(), 7);
    char line[256];
    const int n = kat::format_run_phase(line, sizeof line);
    const std::string s(line, size_t(n));
    EXPECT_EQ(s.rfind("kat: SIGUSR1 at step 7: writing a checkpoint for 0.", 0), 0u) << s;
    EXPECT_EQ(s.back(), '\n');
  }
  EXPECT_STREQ(kat::run_phase(), "outer");
  EXPECT_EQ(kat::run_phase_step(), 3);
}

TEST(RunPhase, BeforeTrainingNoStepIsNamed) {
  kat::set_run_phase("reading the dataset", -1);
  char line[256];
  const std::string s(line, size_t(kat::format_run_phase(line, sizeof line)));
  EXPECT_EQ(s.rfind("kat: SIGUSR1: reading the dataset for ", 0), 0u) << s;
}

TEST(RunPhase, FormatNeverOverrunsTheBuffer) {
  kat::set_run_phase("a phase with a long name that does not fit", -12);
  char line[16];
  const int n = kat::format_run_phase(line, sizeof line);
  EXPECT_EQ(n, 15);
  EXPECT_EQ(line[15], '\0');
}

TEST(RunPhase, Sigusr1WritesTheLineAndTheProcessGoesOn) {
  kat::install_run_phase_report();
  kat::set_run_phase("waiting for the next batch from the data loader", 42);
  testing::internal::CaptureStderr();
  std::raise(SIGUSR1);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("kat: SIGUSR1 at step 42: waiting for the next batch from the data loader for "),
            std::string::npos)
      << err;
  std::signal(SIGUSR1, SIG_DFL);
}

}  // namespace
