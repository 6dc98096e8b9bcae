// Command go_hub is the Go peer of the bench suite: the gorilla/websocket chat example's
// architecture (one hub goroutine owning the rooms, a read and a write goroutine per connection, a
// buffered send channel of 256 per client, queued messages coalesced into one frame joined by
// newlines), extended only with rooms so it speaks the bench protocol:
//
//	GET /ws?room=R joins room R. Every text message is sent to every member of its room, the
//	sender included (the sender's copy is its acknowledgement), and to every member of room "*"
//	(supervisors watching all conversations).
//
// Settings are the example's (1024-byte buffers, 60 s pong wait, 54 s pings, 10 s write deadline,
// slow clients dropped when their channel is full) except the read limit: 8 KiB, Kefu's text limit,
// instead of 512 B so the bench's message sizes fit.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

const (
	writeWait      = 10 * time.Second
	pongWait       = 60 * time.Second
	pingPeriod     = (pongWait * 9) / 10
	maxMessageSize = 8192
)

var newline = []byte{'\n'}

// watchAllRoom's members receive the messages of every room.
const watchAllRoom = "*"

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}

type client struct {
	hub  *hub
	room string
	conn *websocket.Conn
	send chan []byte
}

type roomMessage struct {
	room string
	data []byte
}

type hub struct {
	rooms      map[string]map[*client]bool
	broadcast  chan roomMessage
	register   chan *client
	unregister chan *client
}

func newHub() *hub {
	return &hub{
		rooms:      make(map[string]map[*client]bool),
		broadcast:  make(chan roomMessage),
		register:   make(chan *client),
		unregister: make(chan *client),
	}
}

func (h *hub) drop(c *client) {
	members := h.rooms[c.room]
	if _, ok := members[c]; ok {
		delete(members, c)
		close(c.send)
		if len(members) == 0 {
			delete(h.rooms, c.room)
		}
	}
}

// deliver queues data for each member; a member whose queue is full is dropped (the example's policy).
func (h *hub) deliver(members map[*client]bool, data []byte) {
	for c := range members {
		select {
		case c.send <- data:
		default:
			h.drop(c)
		}
	}
}

func (h *hub) run() {
	for {
		select {
		case c := <-h.register:
			members := h.rooms[c.room]
			if members == nil {
				members = make(map[*client]bool)
				h.rooms[c.room] = members
			}
			members[c] = true
		case c := <-h.unregister:
			h.drop(c)
		case m := <-h.broadcast:
			h.deliver(h.rooms[m.room], m.data)
			if m.room != watchAllRoom {
				h.deliver(h.rooms[watchAllRoom], m.data)
			}
		}
	}
}

func (c *client) readPump() {
	defer func() {
		c.hub.unregister <- c
		c.conn.Close()
	}()
	c.conn.SetReadLimit(maxMessageSize)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { c.conn.SetReadDeadline(time.Now().Add(pongWait)); return nil })
	for {
		_, message, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		c.hub.broadcast <- roomMessage{room: c.room, data: bytes.TrimSpace(message)}
	}
}

func (c *client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case message, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			w, err := c.conn.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			w.Write(message)
			n := len(c.send)
			for i := 0; i < n; i++ {
				w.Write(newline)
				w.Write(<-c.send)
			}
			if err := w.Close(); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

func serveWs(h *hub, w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{hub: h, room: r.URL.Query().Get("room"), conn: conn, send: make(chan []byte, 256)}
	h.register <- c
	go c.writePump()
	go c.readPump()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	flag.Parse()
	h := newHub()
	go h.run()
	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { serveWs(h, w, r) })
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "PEER READY ws://%s/ws\n", *addr)
	log.Fatal(http.Serve(listener, nil))
}
