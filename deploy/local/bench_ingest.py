#!/usr/bin/env python3
"""Ingestion benchmark: end-to-end throughput of cce-ingestion against a bare consumer baseline.

Run by deploy/local/bench-ingest.sh, which starts the stack and builds release binaries. In one
run on the same broker it prints, for the same topic of generated events:
  - baseline: a bare confluent-kafka (librdkafka) consumer that only counts, draining the topic;
  - cce-ingestion: from start until every partition's committed offset reaches the end (which
    happens only after the events are durable in the log on S3), its events/s and MB/s, CPU
    seconds per million events and peak RSS.
Each is repeated; medians and the ratio are reported.
"""
import argparse, json, os, statistics, subprocess, sys, time, uuid

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


def run_ingestion(args, env, topic, total, partitions):
    group = f"bench-{uuid.uuid4().hex}"
    cmd = [args.ingestion, "--events-topic", topic, "--dead-letter-topic", args.dlq,
           "--group-id", group, "--ops-addr", "127.0.0.1:0"]
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
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return elapsed, cpu, rss_mib


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--loadgen", required=True)
    p.add_argument("--ingestion", required=True)
    p.add_argument("--dlq", default="chat-events-dlq")
    p.add_argument("--events", type=int, default=200_000, help="content events to generate")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    env = dict(os.environ, RUST_LOG="warn")

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.brokers})
    for f in admin.create_topics([NewTopic(topic, args.partitions, 1)]).values():
        f.result()
    log(f"producing {args.events} generated events to {topic}")
    produced = subprocess.run([args.loadgen, "--brokers", args.brokers, "--topic", topic,
                               "--events", str(args.events), "--companies", "5",
                               "--conversations-per-company", "40", "--span-days", "60"],
                              env=env, check=True, capture_output=True, text=True)
    log(produced.stderr.strip().splitlines()[-1])
    # Count and size the topic exactly with the baseline client.
    c = Consumer({"bootstrap.servers": args.brokers, "group.id": f"size-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(args.partitions))
    c.close()
    dry = subprocess.run([args.loadgen, "--dry-run", "--events", str(args.events), "--companies", "5",
                          "--conversations-per-company", "40", "--span-days", "60"],
                         capture_output=True, check=True)
    mbytes = (len(dry.stdout) - dry.stdout.count(b"\n")) / 1e6
    log(f"{total} messages, {mbytes:.1f} MB of JSON")

    base, ingest = [], []
    for i in range(args.repeat):
        base.append(bare_drain(args.brokers, topic, total))
        log(f"baseline run {i + 1}: {total / base[-1]:,.0f} msg/s")
        ingest.append(run_ingestion(args, env, topic, total, args.partitions))
        e, cpu, rss = ingest[-1]
        log(f"ingestion run {i + 1}: {total / e:,.0f} events/s, {cpu:.1f} CPU s, peak RSS {rss:.0f} MiB")

    b = statistics.median(base)
    e = statistics.median(x[0] for x in ingest)
    cpu = statistics.median(x[1] for x in ingest)
    rss = max(x[2] for x in ingest)
    result = {
        "messages": total, "megabytes": round(mbytes, 1), "runs": args.repeat,
        "baseline_bare_consumer_msgs_per_s": round(total / b),
        "ingestion_events_per_s": round(total / e),
        "ingestion_mb_per_s": round(mbytes / e, 2),
        "ratio_to_baseline": round(b / e, 3),
        "ingestion_cpu_s_per_million_events": round(cpu / total * 1e6, 1),
        "ingestion_peak_rss_mib": round(rss),
    }
    print(f"""
ingestion benchmark ({total:,} events, {mbytes:.1f} MB, {args.partitions} partitions, median of {args.repeat})
  baseline: bare librdkafka consumer (confluent-kafka) drain   {result['baseline_bare_consumer_msgs_per_s']:>10,} msg/s
  cce-ingestion, until durable in the log and committed        {result['ingestion_events_per_s']:>10,} events/s  {result['ingestion_mb_per_s']:.2f} MB/s
  ratio ingestion / baseline                                   {result['ratio_to_baseline']:>10.3f}
  ingestion CPU per million events                             {result['ingestion_cpu_s_per_million_events']:>10.1f} s
  ingestion peak RSS                                           {result['ingestion_peak_rss_mib']:>10} MiB
""")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
