#!/usr/bin/env python3
"""Ingestion benchmark: end-to-end throughput of cce-ingestion against a bare consumer baseline.

Run by deploy/local/bench-ingest.sh, which starts the stack and builds release binaries. In one
run on the same broker it prints, for the same topic of generated events:
  - baseline: a bare confluent-kafka (librdkafka) consumer that only counts, draining the topic;
  - cce-ingestion: from start until every partition's committed offset reaches the end (which
    happens only after the events are durable in the log on S3), its events/s and MB/s, CPU
    seconds per million events and peak RSS.
Each is repeated; medians and the ratio are reported.

--live N[,M…] instead generates live traffic: N companies chatting at once with current
timestamps (every flush touches many companies), and also reports the log's S3 writes per
partition flush and per 10,000 events, read from cce-ingestion's metrics, for each N — so the
cost per flush can be compared at 10 and at 1,000 companies.
"""
import argparse, json, os, socket, statistics, subprocess, sys, time, urllib.request, uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def bare_drain(brokers, topic, total):
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"bare-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    count, started, first = 0, time.monotonic(), None
    while count < total:
        batch = c.consume(num_messages=10000, timeout=1.0)
        for m in batch:
            if m.error() is None:
                if first is None:
                    first = time.monotonic()
                count += 1
        if time.monotonic() - started > 600:
            raise SystemExit(f"baseline drained only {count} of {total}")
    elapsed = time.monotonic() - started
    c.close()
    return elapsed


def committed_total(brokers, group, topic, partitions):
    c = Consumer({"bootstrap.servers": brokers, "group.id": group})
    try:
        offsets = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in offsets)
    finally:
        c.close()


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    hwm_kib = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm_kib = int(line.split()[1])
    return cpu, hwm_kib / 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(ops):
    """Prometheus text from cce-ingestion, as {name{labels}: value}."""
    text = urllib.request.urlopen(f"http://{ops}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def log_writes(metrics):
    """PUTs the log took and flushes that caused them, from the ingestion's own counters."""
    # cce_ingest_log_objects_written_total counts the same objects (kept for older dashboards):
    # take the v2 counter when the service has it, never both.
    v2 = [v for k, v in metrics.items() if k.startswith("cce_log_objects_written_total")]
    puts = sum(v2) if v2 else sum(v for k, v in metrics.items()
                                  if k.startswith("cce_ingest_log_objects_written_total"))
    flushes = sum(v for k, v in metrics.items() if k.startswith("cce_ingest_flush_duration_seconds_count"))
    return puts, flushes


def run_ingestion(args, env, topic, total, partitions):
    group = f"bench-{uuid.uuid4().hex}"
    ops = f"127.0.0.1:{free_port()}"
    cmd = [args.ingestion, "--events-topic", topic, "--dead-letter-topic", args.dlq,
           "--group-id", group, "--ops-addr", ops]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        while True:
            time.sleep(0.25)
            if proc.poll() is not None:
                raise SystemExit(f"cce-ingestion exited with {proc.returncode}")
            if committed_total(args.brokers, group, topic, partitions) >= total:
                break
            if time.monotonic() - started > 900:
                raise SystemExit("ingestion did not finish within 15 minutes")
        elapsed = time.monotonic() - started
        cpu, rss_mib = proc_stats(proc.pid)
        puts, flushes = log_writes(scrape(ops))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return elapsed, cpu, rss_mib, puts, flushes


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--loadgen", required=True)
    p.add_argument("--ingestion", required=True)
    p.add_argument("--dlq", default="chat-events-dlq")
    p.add_argument("--events", type=int, default=200_000, help="content events to generate")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--live", default="", help="live traffic: comma-separated company counts, e.g. 10,1000")
    args = p.parse_args()
    env = dict(os.environ, RUST_LOG="warn")
    if args.live:
        results = [bench(args, env, int(n)) for n in args.live.split(",")]
        print(json.dumps(results))
    else:
        print(json.dumps(bench(args, env, None)))


def generation(args, companies):
    """loadgen arguments: a backfill of 5 companies over 60 days, or live traffic."""
    if companies is None:
        return ["--events", str(args.events), "--companies", "5",
                "--conversations-per-company", "40", "--span-days", "60"]
    # Live: every company chats at once, timestamps now, spread over the time production takes
    # at ~5,000 events/s.
    return ["--events", str(args.events), "--companies", str(companies),
            "--people-per-company", "4", "--conversations-per-company", "3",
            "--start", "now", "--span-seconds", str(max(1, args.events // 5000))]


def produce(args, env, companies):
    """A new topic with the generated events; its name, message count and MB of JSON. Every run
    gets its own topic: the log never rewrites what it holds, so draining a topic it already
    holds again would write nothing and measure nothing."""
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.brokers})
    for f in admin.create_topics([NewTopic(topic, args.partitions, 1)]).values():
        f.result()
    log(f"producing {args.events} generated events to {topic}"
        + (f" (live traffic, {companies} companies)" if companies else ""))
    produced = subprocess.run([args.loadgen, "--brokers", args.brokers, "--topic", topic,
                               "--id-prefix", topic + "-"] + generation(args, companies),
                              env=env, check=True, capture_output=True, text=True)
    log(produced.stderr.strip().splitlines()[-1])
    # Count and size the topic exactly with the baseline client.
    c = Consumer({"bootstrap.servers": args.brokers, "group.id": f"size-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(args.partitions))
    c.close()
    dry = subprocess.run([args.loadgen, "--dry-run", "--id-prefix", topic + "-"] + generation(args, companies),
                         capture_output=True, check=True)
    mbytes = (len(dry.stdout) - dry.stdout.count(b"\n")) / 1e6
    log(f"{total} messages, {mbytes:.1f} MB of JSON")
    return topic, total, mbytes


def bench(args, env, companies):
    # Compaction is measured on its own; here only what ingestion writes.
    env = dict(env, CCE_COMPACTION="off")
    base, ingest = [], []
    for i in range(args.repeat):
        topic, total, mbytes = produce(args, env, companies)
        base.append(bare_drain(args.brokers, topic, total))
        log(f"baseline run {i + 1}: {total / base[-1]:,.0f} msg/s")
        ingest.append(run_ingestion(args, env, topic, total, args.partitions))
        e, cpu, rss, puts, flushes = ingest[-1]
        log(f"ingestion run {i + 1}: {total / e:,.0f} events/s, {cpu:.1f} CPU s, peak RSS {rss:.0f} MiB, "
            f"{puts:.0f} log PUTs in {flushes:.0f} flushes")

    b = statistics.median(base)
    e = statistics.median(x[0] for x in ingest)
    cpu = statistics.median(x[1] for x in ingest)
    rss = max(x[2] for x in ingest)
    puts = statistics.median(x[3] for x in ingest)
    flushes = statistics.median(x[4] for x in ingest)
    result = {
        "mode": f"live, {companies} companies" if companies else "backfill, 5 companies over 60 days",
        "messages": total, "megabytes": round(mbytes, 1), "runs": args.repeat,
        "baseline_bare_consumer_msgs_per_s": round(total / b),
        "ingestion_events_per_s": round(total / e),
        "ingestion_mb_per_s": round(mbytes / e, 2),
        "ratio_to_baseline": round(b / e, 3),
        "ingestion_cpu_s_per_million_events": round(cpu / total * 1e6, 1),
        "ingestion_peak_rss_mib": round(rss),
        "log_puts": puts, "flushes": flushes,
        "log_puts_per_flush": round(puts / flushes, 2) if flushes else None,
        "log_puts_per_10k_events": round(puts / total * 1e4, 2),
    }
    print(f"""
ingestion benchmark, {result['mode']} ({total:,} events, {mbytes:.1f} MB, {args.partitions} partitions, median of {args.repeat})
  baseline: bare librdkafka consumer (confluent-kafka) drain   {result['baseline_bare_consumer_msgs_per_s']:>10,} msg/s
  cce-ingestion, until durable in the log and committed        {result['ingestion_events_per_s']:>10,} events/s  {result['ingestion_mb_per_s']:.2f} MB/s
  ratio ingestion / baseline                                   {result['ratio_to_baseline']:>10.3f}
  ingestion CPU per million events                             {result['ingestion_cpu_s_per_million_events']:>10.1f} s
  ingestion peak RSS                                           {result['ingestion_peak_rss_mib']:>10} MiB
  log PUTs per partition flush (segments + pointers + markers) {result['log_puts_per_flush']!s:>10}
  log PUTs per 10,000 events                                   {result['log_puts_per_10k_events']:>10}
""")
    return result


if __name__ == "__main__":
    main()
