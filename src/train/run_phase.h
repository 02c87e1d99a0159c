// Where a training run is, for a run that seems stuck: the trainer names each phase as it enters it
// (waiting for the loader's batch, the step's compute, a checkpoint, the evaluation) and SIGUSR1
// makes the process write one line on stderr, "kat: SIGUSR1 at step N: <phase> for S s", and go
// on. bench scripts send it before they kill a run that passed its time limit (timeout -s USR1),
// so the log says where the run stood; a user can `kill -USR1 PID` a training that looks stuck.
// The phase is a string literal (static storage) kept in an atomic pointer; the handler only reads
// atomics, the monotonic clock and write(2): async-signal-safe.
#pragma once
#include <cstdint>

namespace kat {

// `what`: a string literal (its address is kept). `step`: the optimizer step the run is at (< 0:
// before training starts; the line then names no step).
void set_run_phase(const char* what, int64_t step);
// The phase's text and step now (tests).
const char* run_phase();
int64_t run_phase_step();
// SIGUSR1 -> the line above (kat train installs it).
void install_run_phase_report();
// The line the handler writes, into buf (size n, NUL-terminated); its length. Async-signal-safe.
int format_run_phase(char* buf, int n);

// Sets a phase for a scope and puts the previous one back at its end.
class RunPhase {
 public:
  RunPhase(const char* what, int64_t step) : prev_(run_phase()), prev_step_(run_phase_step()) {
    set_run_phase(what, step);
  }
  ~RunPhase() { set_run_phase(prev_, prev_step_); }
  RunPhase(const RunPhase&) = delete;
  RunPhase& operator=(const RunPhase&) = delete;

 private:
  const char* prev_;
  int64_t prev_step_;
};

}  // namespace kat
