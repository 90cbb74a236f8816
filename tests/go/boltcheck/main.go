// Command boltcheck is the test oracle for ctrconv's bolt writer: it opens files with real Go
// bbolt (Debian's golang-github-coreos-bbolt-dev, GOPATH mode) and reports what Go sees.
//
//	boltcheck dump FILE            read-only; JSON tree like BucketTree.to_plain()
//	boltcheck check FILE           tx.Check(); prints each problem, exit 1 if any
//	boltcheck mutate FILE SEED N   N random read-write transactions mirrored on an in-memory
//	                               model, then Check and a full comparison; exit 1 on any
//	                               error, panic or difference; BOLTCHECK_NO_FREELIST_SYNC=1
//	                               opens with NoFreelistSync like containerd 1.7+
//	boltcheck copy SRC DST PAGESIZE  replay SRC into a new DST through Go transactions
//	boltcheck init FILE PAGESIZE   create a fresh database (Open + Close), like bbolt's db.init
//
// Exit codes: 0 fine, 1 problems found, 2 usage or open error.
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

func main() {
	if len(os.Args) < 3 {
		usage()
	}
	var err error
	switch cmd, file := os.Args[1], os.Args[2]; {
	case cmd == "dump" && len(os.Args) == 3:
		err = dump(file)
	case cmd == "check" && len(os.Args) == 3:
		err = check(file)
	case cmd == "mutate" && len(os.Args) == 5:
		seed, perr := strconv.ParseInt(os.Args[3], 10, 64)
		n, nerr := strconv.Atoi(os.Args[4])
		if perr != nil || nerr != nil {
			usage()
		}
		err = mutate(file, seed, n)
	case cmd == "copy" && len(os.Args) == 5:
		size, perr := strconv.Atoi(os.Args[4])
		if perr != nil {
			usage()
		}
		err = copyDB(file, os.Args[3], size)
	case cmd == "init" && len(os.Args) == 4:
		size, perr := strconv.Atoi(os.Args[3])
		if perr != nil {
			usage()
		}
		err = initDB(file, size)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "boltcheck:", err)
		if _, ok := err.(problems); ok {
			os.Exit(1)
		}
		os.Exit(2)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: boltcheck dump FILE | check FILE | mutate FILE SEED N | copy SRC DST PAGESIZE | init FILE PAGESIZE")
	os.Exit(2)
}

// problems are findings about the file (exit 1), as opposed to failures to run (exit 2).
type problems []string

func (p problems) Error() string { return fmt.Sprintf("%d problems found", len(p)) }

func openDB(file string, readOnly bool) (*bolt.DB, error) {
	return bolt.Open(file, 0600, &bolt.Options{ReadOnly: readOnly, Timeout: 5 * time.Second})
}

// model is an in-memory bucket: what dump prints and what mutate expects to find.
type model struct {
	Sequence uint64                 `json:"sequence"`
	Entries  map[string]interface{} `json:"entries"`
}

func newModel(seq uint64) *model {
	return &model{Sequence: seq, Entries: map[string]interface{}{}}
}

func readBucket(b *bolt.Bucket) *model {
	m := newModel(b.Sequence())
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			m.Entries[hex.EncodeToString(k)] = readBucket(b.Bucket(k))
		} else {
			m.Entries[hex.EncodeToString(k)] = hex.EncodeToString(v)
		}
	}
	return m
}

func readTree(tx *bolt.Tx) *model {
	root := newModel(0)
	c := tx.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			root.Entries[hex.EncodeToString(k)] = hex.EncodeToString(v)
		} else {
			root.Entries[hex.EncodeToString(k)] = readBucket(tx.Bucket(k))
		}
	}
	return root
}

func dump(file string) (err error) {
	defer recoverInto(&err)
	db, err := openDB(file, true)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		enc := json.NewEncoder(os.Stdout)
		return enc.Encode(readTree(tx))
	})
}

func checkDB(db *bolt.DB) (found problems, err error) {
	defer recoverInto(&err)
	err = db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			found = append(found, cerr.Error())
		}
		return nil
	})
	return found, err
}

func check(file string) error {
	db, err := openDB(file, true)
	if err != nil {
		return err
	}
	defer db.Close()
	found, err := checkDB(db)
	if err != nil {
		return problems{err.Error()}
	}
	for _, p := range found {
		fmt.Println(p)
	}
	if len(found) > 0 {
		return found
	}
	return nil
}

// copyDB replays SRC into a fresh DST through ordinary Go transactions (like bbolt compact),
// giving a Go-made twin of a file to compare behaviour with.
func copyDB(src, dst string, pageSize int) (err error) {
	defer recoverInto(&err)
	in, err := openDB(src, true)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := bolt.Open(dst, 0600, &bolt.Options{PageSize: pageSize})
	if err != nil {
		return err
	}
	defer out.Close()
	return in.View(func(itx *bolt.Tx) error {
		return out.Update(func(otx *bolt.Tx) error {
			return itx.ForEach(func(name []byte, b *bolt.Bucket) error {
				ob, err := otx.CreateBucket(name)
				if err != nil {
					return err
				}
				return copyBucket(b, ob)
			})
		})
	})
}

func copyBucket(in, out *bolt.Bucket) error {
	if err := out.SetSequence(in.Sequence()); err != nil {
		return err
	}
	return in.ForEach(func(k, v []byte) error {
		if v != nil {
			return out.Put(k, v)
		}
		ob, err := out.CreateBucket(k)
		if err != nil {
			return err
		}
		return copyBucket(in.Bucket(k), ob)
	})
}

func initDB(file string, pageSize int) error {
	db, err := bolt.Open(file, 0600, &bolt.Options{PageSize: pageSize})
	if err != nil {
		return err
	}
	return db.Close()
}

// recoverInto turns a bbolt panic (its way of reporting corruption) into a problem.
func recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = problems{fmt.Sprintf("panic: %v", r)}
	}
}

// mutator applies random operations to the database and to a model of it in lockstep.
type mutator struct {
	rng  *rand.Rand
	tree *model
}

type target struct {
	path   []string // hex names from the root
	model  *model
	bucket *bolt.Bucket // nil for the root
}

func (m *mutator) targets(tx *bolt.Tx) []target {
	out := []target{{model: m.tree}}
	var walk func(path []string, mb *model, b *bolt.Bucket)
	walk = func(path []string, mb *model, b *bolt.Bucket) {
		for _, name := range sortedKeys(mb) {
			child, ok := mb.Entries[name].(*model)
			if !ok {
				continue
			}
			raw, _ := hex.DecodeString(name)
			var cb *bolt.Bucket
			if b == nil {
				cb = tx.Bucket(raw)
			} else {
				cb = b.Bucket(raw)
			}
			p := append(append([]string{}, path...), name)
			out = append(out, target{path: p, model: child, bucket: cb})
			walk(p, child, cb)
		}
	}
	walk(nil, m.tree, nil)
	return out
}

func sortedKeys(mb *model) []string {
	keys := make([]string, 0, len(mb.Entries))
	for k := range mb.Entries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (m *mutator) randomBytes(min, max int) []byte {
	b := make([]byte, min+m.rng.Intn(max-min+1))
	m.rng.Read(b)
	return b
}

func (m *mutator) randomValue() []byte {
	switch m.rng.Intn(10) {
	case 0:
		return []byte{}
	case 1:
		return m.randomBytes(3000, 12000) // overflow pages
	default:
		return m.randomBytes(1, 200)
	}
}

// pick returns a random existing entry of t: plain values if wantBucket is false.
func (m *mutator) pick(t target, wantBucket bool) (string, bool) {
	var names []string
	for _, name := range sortedKeys(t.model) {
		if _, isBucket := t.model.Entries[name].(*model); isBucket == wantBucket {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return "", false
	}
	return names[m.rng.Intn(len(names))], true
}

// step applies one random operation. Bucket deletion is only done as the first operation of
// a transaction, which then ends: bbolt 1.3.6's DeleteBucket iterates the doomed bucket while
// deleting from it, and when that bucket's node was already modified in the same transaction
// it skips every other nested bucket and leaks its pages ("unreachable unfreed"; reproduced
// on files made by Go itself, see `boltcheck copy`).
func (m *mutator) step(tx *bolt.Tx, first bool) (done bool, err error) {
	targets := m.targets(tx)
	t := targets[m.rng.Intn(len(targets))]
	op := m.rng.Intn(100)
	if os.Getenv("BOLTCHECK_TRACE") != "" {
		fmt.Fprintf(os.Stderr, "op %d on %v (%d entries)\n", op, t.path, len(t.model.Entries))
	}
	if t.bucket == nil {
		// The root holds only buckets.
		if op < 70 {
			name := m.randomBytes(1, 16)
			if _, exists := t.model.Entries[hex.EncodeToString(name)]; exists {
				return false, nil
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return false, fmt.Errorf("CreateBucket %x: %v", name, err)
			}
			t.model.Entries[hex.EncodeToString(name)] = newModel(0)
		} else if name, ok := m.pick(t, true); ok && first && len(targets) > 4 {
			raw, _ := hex.DecodeString(name)
			if err := tx.DeleteBucket(raw); err != nil {
				return false, fmt.Errorf("DeleteBucket %x: %v", raw, err)
			}
			delete(t.model.Entries, name)
			return true, nil
		}
		return false, nil
	}
	b := t.bucket
	switch {
	case op < 35: // put a new key (or overwrite one that happens to exist)
		key := m.randomBytes(1, 40)
		if _, isBucket := t.model.Entries[hex.EncodeToString(key)].(*model); isBucket {
			return false, nil
		}
		value := m.randomValue()
		if err := b.Put(key, value); err != nil {
			return false, fmt.Errorf("Put %x: %v", key, err)
		}
		t.model.Entries[hex.EncodeToString(key)] = hex.EncodeToString(value)
	case op < 55: // overwrite an existing key
		if name, ok := m.pick(t, false); ok {
			raw, _ := hex.DecodeString(name)
			value := m.randomValue()
			if err := b.Put(raw, value); err != nil {
				return false, fmt.Errorf("Put %x: %v", raw, err)
			}
			t.model.Entries[name] = hex.EncodeToString(value)
		}
	case op < 80: // delete an existing key
		if name, ok := m.pick(t, false); ok {
			raw, _ := hex.DecodeString(name)
			if err := b.Delete(raw); err != nil {
				return false, fmt.Errorf("Delete %x: %v", raw, err)
			}
			delete(t.model.Entries, name)
		}
	case op < 88: // create a sub-bucket
		name := m.randomBytes(1, 16)
		if _, exists := t.model.Entries[hex.EncodeToString(name)]; exists {
			return false, nil
		}
		if _, err := b.CreateBucket(name); err != nil {
			return false, fmt.Errorf("CreateBucket %x: %v", name, err)
		}
		t.model.Entries[hex.EncodeToString(name)] = newModel(0)
	case op < 92: // delete a sub-bucket
		if name, ok := m.pick(t, true); ok && first {
			raw, _ := hex.DecodeString(name)
			if err := b.DeleteBucket(raw); err != nil {
				return false, fmt.Errorf("DeleteBucket %x: %v", raw, err)
			}
			delete(t.model.Entries, name)
			return true, nil
		}
	default:
		seq, err := b.NextSequence()
		if err != nil {
			return false, fmt.Errorf("NextSequence: %v", err)
		}
		if seq != t.model.Sequence+1 {
			return false, fmt.Errorf("NextSequence of %v = %d, model says %d", t.path, seq, t.model.Sequence+1)
		}
		t.model.Sequence = seq
	}
	return false, nil
}

func mutate(file string, seed int64, n int) (err error) {
	defer recoverInto(&err)
	// BOLTCHECK_NO_FREELIST_SYNC=1 opens the way containerd 1.7+ opens meta.db.
	db, err := bolt.Open(file, 0600, &bolt.Options{
		Timeout:        5 * time.Second,
		NoFreelistSync: os.Getenv("BOLTCHECK_NO_FREELIST_SYNC") == "1",
	})
	if err != nil {
		return err
	}
	defer db.Close()
	m := &mutator{rng: rand.New(rand.NewSource(seed))}
	if err := db.View(func(tx *bolt.Tx) error { m.tree = readTree(tx); return nil }); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		ops := 1 + m.rng.Intn(20)
		err := db.Update(func(tx *bolt.Tx) error {
			for j := 0; j < ops; j++ {
				if done, err := m.step(tx, j == 0); err != nil || done {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return problems{fmt.Sprintf("transaction %d: %v", i, err)}
		}
		if os.Getenv("BOLTCHECK_TRACE") != "" {
			found, _ := checkDB(db)
			fmt.Fprintf(os.Stderr, "after transaction %d: %v\n", i, found)
		}
	}
	found, err := checkDB(db)
	if err != nil {
		return err
	}
	var got *model
	if err := db.View(func(tx *bolt.Tx) error { got = readTree(tx); return nil }); err != nil {
		return err
	}
	want, _ := json.Marshal(m.tree)
	have, _ := json.Marshal(got)
	if !bytes.Equal(want, have) {
		found = append(found, "database content differs from the model of the applied operations")
	}
	for _, p := range found {
		fmt.Println(p)
	}
	if len(found) > 0 {
		return found
	}
	return nil
}
