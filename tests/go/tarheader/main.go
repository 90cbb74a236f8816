// tarheader: the oracle for ctrconv's tar header encoder (ctrconv/layers/tarwrite.py).
//
// Reads one JSON header a line on stdin and writes, a line each, the hex of the bytes Go's
// archive/tar writes for it (the PAX extended header, when one is needed, and the header
// block; no content). Strings are hex so that names may hold any bytes.
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

type header struct {
	Name     string            `json:"name"`
	Typeflag string            `json:"typeflag"`
	Mode     int64             `json:"mode"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	Size     int64             `json:"size"`
	MtimeNs  int64             `json:"mtime_ns"`
	Linkname string            `json:"linkname"`
	Devmajor int64             `json:"devmajor"`
	Devminor int64             `json:"devminor"`
	Xattrs   map[string]string `json:"xattrs"`
	PAX      bool              `json:"pax"`
}

func unhex(s string) string {
	b, err := hex.DecodeString(s)
	if err != nil {
		fail(err)
	}
	return string(b)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tarheader:", err)
	os.Exit(2)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var h header
		if err := json.Unmarshal(in.Bytes(), &h); err != nil {
			fail(err)
		}
		hdr := &tar.Header{
			Name: unhex(h.Name), Typeflag: unhex(h.Typeflag)[0], Mode: h.Mode, Uid: h.UID, Gid: h.GID,
			Size: h.Size, Linkname: unhex(h.Linkname), Devmajor: h.Devmajor, Devminor: h.Devminor,
		}
		if h.MtimeNs != 0 {
			hdr.ModTime = time.Unix(0, h.MtimeNs)
		}
		if h.PAX {
			hdr.Format = tar.FormatPAX // keeps sub-second mtimes, as containerd's ChangeWriter asks
		}
		if len(h.Xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range h.Xattrs {
				hdr.PAXRecords["SCHILY.xattr."+unhex(k)] = unhex(v)
			}
		}
		var buf bytes.Buffer
		if err := tar.NewWriter(&buf).WriteHeader(hdr); err != nil {
			fail(fmt.Errorf("%q: %w", hdr.Name, err))
		}
		fmt.Fprintln(out, hex.EncodeToString(buf.Bytes()))
	}
	if err := in.Err(); err != nil {
		fail(err)
	}
}
