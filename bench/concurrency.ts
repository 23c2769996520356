/** Runs fn(0) .. fn(count - 1), at most `width` at a time (each worker takes the next index when it is done). */
export async function forEachConcurrently(count: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (;;) {
        const i = next++;
        if (i >= count) return;
        await fn(i);
      }
    }),
  );
}
