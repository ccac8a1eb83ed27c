import subprocess
def test_dbg(proxy, agent, api):
    out = subprocess.run(["curl", "-sS", "--http1.1", "--raw", "--cacert", str(proxy.ca), "-x", proxy.url("agent", agent), f"{api}/big-text?lines=400&chunk=997&encoding=gzip", "-D", "/tmp/alk/h.txt", "-o", "/tmp/alk/raw.bin"], capture_output=True)
    print(out)
    assert 0
