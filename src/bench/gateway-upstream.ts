/**
 * Upstream of `cordon bench gateway`, run in its own process: the project's
 * fake OpenAI-compatible provider (`gateway/testing/fake-upstream.ts`) on a
 * loopback port, which it sends to its parent once listening. Streams are
 * written one event per write, as providers flush them. The requests it
 * records are dropped every second so a long run does not grow its memory.
 */
import { startFakeUpstream } from '../gateway/testing/fake-upstream.js';

if (process.send) {
  process.once('message', () => {
    startFakeUpstream({ streamWrites: 'per-event' }).then(
      (up) => {
        setInterval(() => { up.seen.length = 0; }, 1000);
        process.send!({ ok: true, url: up.url });
      },
      (e: unknown) => process.send!({ ok: false, error: (e as Error).message }),
    );
  });
  process.on('disconnect', () => process.exit(0));
}
