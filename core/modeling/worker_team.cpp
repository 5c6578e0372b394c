#include "worker_team.h"

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <thread>

#include "plugformer/log.h"

namespace plugformer {

namespace {

// The caller (thread 0 of the region) runs piece 0 of every job, thread i piece i. Every thread
// takes part in every job (those without a piece only acknowledge it), so the job's description
// is never rewritten while a thread may still read it.
class Team {
 public:
  void start(int64_t threads) {
    threads_ = threads;
    crowded_ = threads > usable_cores();
  }

  void run(int64_t n, int64_t grain, TeamBody body, const void* context) {
    const int64_t used = std::min(threads_, (n + grain - 1) / grain);
    job_ = {body, context, n, (n + used - 1) / used};
    error_ = nullptr;
    pending_.store(threads_ - 1, std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
    std::exception_ptr own;
    try {
      piece(0);
    } catch (...) {
      own = std::current_exception();
    }
    // The body and its context live on the caller's stack: wait for every thread even on error.
    if (pending_.load(std::memory_order_acquire) > 0) {
      const auto since = std::chrono::steady_clock::now();
      while (pending_.load(std::memory_order_acquire) > 0) pause();
      waited_ += std::chrono::steady_clock::now() - since;
    }
    if (own) std::rethrow_exception(own);
    if (error_) std::rethrow_exception(error_);
  }

  void finish() { finished_.store(true, std::memory_order_release); }

  bool crowded() const { return crowded_; }
  // How long run() waited for the other threads, in all.
  std::chrono::steady_clock::duration waited() const { return waited_; }

  void announce_read_ahead(const RowStreams& next, int64_t bytes_per_thread) {
    if (crowded_ || threads_ <= 1) return;
    std::lock_guard<std::mutex> lock(read_ahead_mutex_);
    read_ahead_ = next;
    read_ahead_bytes_ = bytes_per_thread;
    read_ahead_generation_.fetch_add(1, std::memory_order_release);
  }

  // Thread `index` of the region until finish(). After a millisecond without work (main busy
  // with something long), or always when crowded (computed by each thread itself: start() may
  // not have run yet), it yields its core between polls.
  void serve(int64_t index, bool crowded) {
    uint32_t seen = 0, seen_read_ahead = 0;
    int64_t read_ahead_done = -1;  // bytes of each stream of the announced rows read so far; -1: all
    auto idle_since = std::chrono::steady_clock::now();
    for (uint32_t polls = 1;; ++polls) {
      if (generation_.load(std::memory_order_acquire) != seen) {
        ++seen;  // the caller waits for every thread before it starts another job
        try {
          piece(index);
        } catch (...) {
          std::lock_guard<std::mutex> lock(error_mutex_);
          if (!error_) error_ = std::current_exception();
        }
        pending_.fetch_sub(1, std::memory_order_release);
        idle_since = std::chrono::steady_clock::now();
        continue;
      }
      if (finished_.load(std::memory_order_acquire)) return;
      // Announced rows, or the rest of them after a piece that came first.
      if (const uint32_t g = read_ahead_generation_.load(std::memory_order_acquire);
          !crowded && (g != seen_read_ahead || read_ahead_done >= 0)) {
        if (g != seen_read_ahead) read_ahead_done = 0;
        seen_read_ahead = g;
        read_ahead_done = read_ahead(index, seen, read_ahead_done);
        continue;
      }
      if (crowded || (polls % 1024 == 0 && std::chrono::steady_clock::now() - idle_since > std::chrono::milliseconds(1)))
        sched_yield();
      else
        _mm_pause();
    }
  }

 private:
  struct Job {
    TeamBody body = nullptr;
    const void* context = nullptr;
    int64_t n = 0, chunk = 0;
  };

  void pause() const {
    if (crowded_) sched_yield();
    else _mm_pause();
  }

  // Thread `index`'s streams of the announced rows from `done` bytes each, line by line side by
  // side, until they are read (returns -1) or main hands out the job after `seen` (returns how far
  // it got).
  int64_t read_ahead(int64_t index, uint32_t seen, int64_t done) {
    RowStreams next;
    int64_t budget;
    {
      std::lock_guard<std::mutex> lock(read_ahead_mutex_);
      next = read_ahead_;
      budget = read_ahead_bytes_;
    }
    constexpr int64_t kMaxStreams = 16;
    const int64_t per_lane = std::min(next.streams_per_thread, kMaxStreams / std::max<int64_t>(1, next.lanes));
    const int64_t streams = per_lane * next.lanes, all = next.threads * next.streams_per_thread;
    if (index >= next.threads || streams <= 0) return -1;
    const int64_t lane_rows = next.rows / next.lanes;
    const char* start[kMaxStreams];
    int64_t bytes[kMaxStreams], longest = 0;
    for (int64_t k = 0; k < streams; ++k) {
      const int64_t i = index * next.streams_per_thread + k % per_lane, first = lane_rows * i / all;
      start[k] = static_cast<const char*>(next.data) + (k / per_lane * lane_rows + first) * next.row_bytes;
      bytes[k] = std::min((lane_rows * (i + 1) / all - first) * next.row_bytes, budget / streams);
      longest = std::max(longest, bytes[k]);
    }
    for (int64_t b = done; b < longest; b += 64) {
      for (int64_t k = 0; k < streams; ++k)
        if (b < bytes[k]) _mm_prefetch(start[k] + b, _MM_HINT_T0);
      if (b % 2048 == 0 && generation_.load(std::memory_order_acquire) != seen) return b + 64;
    }
    return -1;
  }

  void piece(int64_t index) const {
    const int64_t begin = index * job_.chunk;
    if (begin < job_.n) job_.body(job_.context, begin, std::min(job_.n, begin + job_.chunk));
  }

  int64_t threads_ = 1;
  std::chrono::steady_clock::duration waited_{};
  bool crowded_ = false;  // more threads than cores: a spinning thread would hold up a working one
  Job job_;
  std::mutex error_mutex_;
  std::exception_ptr error_;
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int64_t> pending_{0};
  alignas(64) std::atomic<bool> finished_{false};
  alignas(64) std::atomic<uint32_t> read_ahead_generation_{0};
  std::mutex read_ahead_mutex_;
  RowStreams read_ahead_;
  int64_t read_ahead_bytes_ = 0;
};

thread_local Team* leading = nullptr;  // the team whose main runs on this thread

// Other processes taking cores. A team's pieces are fixed, so while one of its threads waits for a
// core the step waits for it: with one busy process beside a 2-thread decode on 2 cores, the caller
// spent 50-60% of each step waiting and decoded at half the speed of one thread (idle: 3-4%).
// After two steps in a row that waited that long (one can be a hiccup: a process's first step
// waits for its threads' first use), the next steps run on the calling thread alone; then the team
// is tried again, after twice as many steps each time it is still held up.
class Contention {
  using Clock = std::chrono::steady_clock;

 public:
  // Whether a product outside a step should run on its calling thread alone: right after a step
  // that did (a model's head, after the step's layers), not for an input that comes much later.
  bool holding_back() const {
    const Clock::rep end = last_solo_end_.load(std::memory_order_relaxed);
    return end != 0 && Clock::now().time_since_epoch() - Clock::duration(end) < std::chrono::milliseconds(10);
  }
  void solo_step_ended() { last_solo_end_.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed); }
  // Whether this step should run on the calling thread alone.
  bool solo() {
    int64_t left = solo_steps_left_.load(std::memory_order_relaxed);
    while (left > 0)
      if (solo_steps_left_.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) return true;
    return false;
  }
  // After a step with the team.
  void step_ran(Clock::duration took, Clock::duration waited) {
    last_solo_end_.store(0, std::memory_order_relaxed);
    if (waited * 4 <= took || waited <= std::chrono::microseconds(200)) {
      held_up_in_a_row_.store(0, std::memory_order_relaxed);
      next_solo_steps_.store(kFirstSoloSteps, std::memory_order_relaxed);
    } else if (held_up_in_a_row_.fetch_add(1, std::memory_order_relaxed) >= 1) {
      const int64_t steps = std::min<int64_t>(next_solo_steps_.load(std::memory_order_relaxed), kMostSoloSteps);
      next_solo_steps_.store(steps * 2, std::memory_order_relaxed);
      solo_steps_left_.store(steps, std::memory_order_relaxed);
      using us = std::chrono::microseconds;
      logger().debug("decode step waited {} of {} us for its threads (cores taken by other work?): the next {} "
                     "steps run on one thread", std::chrono::duration_cast<us>(waited).count(),
                     std::chrono::duration_cast<us>(took).count(), steps);
    }
  }

 private:
  static constexpr int64_t kFirstSoloSteps = 4, kMostSoloSteps = 256;
  std::atomic<int64_t> solo_steps_left_{0}, next_solo_steps_{kFirstSoloSteps}, held_up_in_a_row_{0};
  std::atomic<Clock::rep> last_solo_end_{0};  // of the last step, if it ran alone; 0 if not
};
Contention contention;

}  // namespace

int64_t usable_cores() {
  cpu_set_t usable;
  return ::sched_getaffinity(0, sizeof(usable), &usable) == 0 ? CPU_COUNT(&usable)
                                                              : int64_t(std::thread::hardware_concurrency());
}

void with_worker_team(const std::function<void()>& main) {
  const int threads = at::get_num_threads();
  // Inside a team (any thread of it, or a team of one) or another parallel region: inline.
  if (threads <= 1 || leading || at::in_parallel_region()) return main();
  Team team;
  std::exception_ptr error;
  // main on this thread, leading `team` (started by the caller).
  auto lead = [&] {
    leading = &team;
    try {
      main();
    } catch (...) {
      error = std::current_exception();
    }
    leading = nullptr;
  };
  if (contention.solo()) {
    // A team of one: the pieces run inline, and libtorch's ops stay on this thread as in a team.
    team.start(1);
    lead();
    contention.solo_step_ended();
  } else {
    const auto began = std::chrono::steady_clock::now();
    // No num_threads clause, as at::parallel_for: the region is the team of libgomp's pool that
    // at::get_num_threads() counts (libtorch avoids the clause for GOMP's thread pool, pytorch#32008).
#pragma omp parallel
    {
      if (omp_get_thread_num() == 0) {
        team.start(omp_get_num_threads());
        lead();
        team.finish();
      } else {
        team.serve(omp_get_thread_num(), omp_get_num_threads() > usable_cores());
      }
    }
    // A crowded team (more threads than cores, as asked) waits by design; it yields instead.
    if (!team.crowded()) contention.step_ran(std::chrono::steady_clock::now() - began, team.waited());
  }
  if (error) std::rethrow_exception(error);
}

void team_read_ahead(const RowStreams& next, int64_t bytes_per_thread) {
  if (leading) leading->announce_read_ahead(next, bytes_per_thread);
}

void team_parallel_for(int64_t n, int64_t grain, TeamBody body, const void* context) {
  grain = std::max<int64_t>(1, grain);
  if (n <= 0) return;
  if (leading) {
    if (n <= grain) return body(context, 0, n);
    return leading->run(n, grain, body, context);
  }
  // Right after a step that ran alone (a model's head after its layers): alone too.
  if (contention.holding_back()) return body(context, 0, n);
  at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) { body(context, begin, end); });
}

}  // namespace plugformer
